"""The dashboard's drift charts: one per feature, its site-wide PSI window by window against the
site's past and against the manifest's reference, with the alert line (``drift.alert_at``).
Pure: the drift watch's records in, chart dicts (title, SVG) out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.core.drift import DriftRecord, Key
from gateway.http.dashboard.svg import Limit, Series, line_chart

MAX_CHARTS = 16


def charts(history: Mapping[Key, Sequence[DriftRecord]], alert_at: float) -> list[dict[str, str]]:
    out = []
    for (model, feature), records in sorted(history.items())[:MAX_CHARTS]:
        alerting = bool(records) and records[-1].alerting
        title = f"{feature} · {model}" + (" · ALERT" if alerting else "")
        series = [
            Series("to past", [(r.end, r.to_past) for r in records]),
            Series("to reference", [(r.end, r.to_reference) for r in records], role="other", dashed=True),
        ]
        svg = line_chart(title, series, [Limit("alert", alert_at)], fmt=lambda v: f"{v:.2f}")
        out.append({"title": title, "svg": svg, "feature": feature, "model": model})
    return out

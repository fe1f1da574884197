"""The shadow stage's agreement in a gate's panel: the candidate's top-1 agreement with the active
model on the same frames, overall and per class, against the minimums, and the commonest confusion
pairs (pure: the gate's state and settings in, text out).

The figures are the gate's own evidence (:mod:`gateway.core.gates.shadow`: the streams it judges and
the pairs it kept), so the panel shows what the decision was made on; the verdicts, with their
bounds, are in the timeline as for every criterion.
"""

from __future__ import annotations

from typing import Any

from gateway.core.agreement import top_pairs
from gateway.core.gates import GateState
from gateway.core.gates.shadow import OVERALL, PER_CLASS
from gateway.core.gates.stream import Stream
from gateway.core.settings import GateSettings

TOP_PAIRS = 5


def _share(st: Stream) -> str:
    return f"{st.n / st.d * 100:.1f} %" if st.d > 0 else "–"


def _below(st: Stream, minimum: float) -> bool:
    return st.d > 0 and st.n / st.d < minimum


def agreement(g: GateState, settings: GateSettings) -> dict[str, Any] | None:
    """The panel's agreement section, or None for a gate that has no agreement evidence."""
    overall = g.streams.get(OVERALL)
    if overall is None:
        return None
    classes = sorted(
        ((k.split(":", 1)[1], st) for k, st in g.streams.items() if k.startswith(PER_CLASS + ":")),
        key=lambda kv: kv[1].n / kv[1].d if kv[1].d > 0 else 1.0,
    )  # the worst first
    return {
        "overall": _share(overall),
        "frames": f"{round(overall.d):,}",
        "windows": str(overall.windows),
        "minimum": f"{settings.shadow_agreement_min * 100:g} %",
        "below": _below(overall, settings.shadow_agreement_min),
        "class_minimum": f"{settings.shadow_agreement_class_min * 100:g} %",
        "classes": [
            {
                "class": name,
                "agreement": _share(st),
                "frames": f"{round(st.d):,}",
                "below": _below(st, settings.shadow_agreement_class_min),
            }
            for name, st in classes
        ],
        "pairs": [
            {"pair": key.replace("->", " → "), "frames": f"{n:,}"}
            for key, n in top_pairs(g.confusion, TOP_PAIRS).items()
        ],
    }

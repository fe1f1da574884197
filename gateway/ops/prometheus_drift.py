"""``/metrics``' drift families, read from the drift watch at scrape time (see
:mod:`gateway.ops.prometheus`): each feature's latest site-wide PSI against the site's past and
against the manifest's reference, whether it is alerting, and the features ignored past the cap."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.telemetry.drift import DriftWatch

P = "ota_gateway_"


def drift_metrics(watch: DriftWatch | None) -> Iterator[Metric]:
    if watch is None:
        return
    psi = GaugeMetricFamily(
        P + "drift_psi",
        "Population stability index of a feature's latest window (against: past or reference)",
        labels=["model", "feature", "against"],
    )
    alerting = GaugeMetricFamily(
        P + "drift_alerting", "1 while a feature's drift alert is raised", labels=["model", "feature"]
    )
    values = GaugeMetricFamily(
        P + "drift_window_values",
        "Values in a feature's latest site-wide window",
        labels=["model", "feature"],
    )
    for (model, feature), rec in sorted(watch.tracker.latest.items()):
        for against, value in (("past", rec.to_past), ("reference", rec.to_reference)):
            if value is not None:
                psi.add_metric([model, feature, against], value)
        alerting.add_metric([model, feature], 1 if rec.alerting else 0)
        values.add_metric([model, feature], rec.count)
    ignored = CounterMetricFamily(
        P + "drift_ignored_features",
        "Feature sketches ignored past drift.max_features",
        value=watch.tracker.ignored,
    )
    yield from (psi, alerting, values, ignored)

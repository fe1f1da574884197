"""The samples' Prometheus families, read from the desk's status (memory) at scrape time.

- ``ota_gateway_samples_total{outcome, reason}``: offers and their fate since the store began:
  ``kept``, ``duplicate``, ``dropped_full`` (the store's bound), ``chosen`` (by the budget),
  ``sent`` (blob on the upload server and index record in the outbox), ``dropped_budget`` (their
  day ended unchosen), ``refused`` (the upload server refused the blob for good: a 4xx such as 413);
- ``ota_gateway_samples_sent_bytes_total{reason}``: content bytes sent;
- ``ota_gateway_samples_waiting{state}``: ``kept`` (waiting for the budget), ``chosen`` (waiting
  for the upload server);
- ``ota_gateway_samples_budget_bytes`` and ``ota_gateway_samples_day_sent_bytes``: today's
  budget and what the budget has given out of it;
- ``ota_gateway_samples_upload_failures_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

P = "ota_gateway_samples_"
OUTCOMES = ("kept", "duplicate", "dropped_full", "chosen", "sent", "dropped_budget", "refused")
REASONS = ("error", "shadow_disagreement", "low_confidence", "user_corrected", "random")


class SamplesCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        st = self.status()
        if not st.get("enabled"):
            return
        counts = st.get("counts", {})
        total = CounterMetricFamily(
            P[:-1], "Samples offered and their fate, by reason", labels=["outcome", "reason"]
        )
        for outcome in OUTCOMES:
            for reason in REASONS:
                total.add_metric([outcome, reason], counts.get(outcome, {}).get(reason, 0))
        yield total
        sent = CounterMetricFamily(
            P + "sent_bytes", "Content bytes sent to the upload server", labels=["reason"]
        )
        for reason in REASONS:
            sent.add_metric([reason], counts.get("sent_bytes", {}).get(reason, 0))
        yield sent
        waiting = GaugeMetricFamily(P + "waiting", "Samples kept at the site", labels=["state"])
        waiting.add_metric(["kept"], st.get("kept_now", 0))
        waiting.add_metric(["chosen"], st.get("waiting_upload", 0))
        yield waiting
        yield GaugeMetricFamily(
            P + "budget_bytes", "The day's upload budget", value=st["budget_bytes_per_day"]
        )
        yield GaugeMetricFamily(
            P + "day_sent_bytes", "Bytes chosen today", value=st.get("day_spent_bytes", 0)
        )
        yield CounterMetricFamily(P + "upload_failures", "Failed blob uploads", value=st["upload_failures"])

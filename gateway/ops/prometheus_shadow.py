"""The shadow stage's agreement for ``/metrics`` (:mod:`gateway.ops.prometheus` yields these): per gate
with agreement evidence, the candidate's top-1 agreement with the active model on the same frames,
overall and per judged class, the frames compared, and the commonest confusion pairs (at most
:data:`TOP_PAIRS` per gate, so the label values stay bounded)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.core.agreement import top_pairs
from gateway.core.gates import GateState
from gateway.core.gates.shadow import OVERALL, PER_CLASS

P = "ota_gateway_"
TOP_PAIRS = 10


def families(gates: Mapping[str, GateState]) -> Iterator[Metric]:
    overall = GaugeMetricFamily(
        P + "gate_shadow_agreement",
        "The candidate's top-1 agreement with the active model on the same frames (shadow stage)",
        labels=["deployment"],
    )
    per_class = GaugeMetricFamily(
        P + "gate_shadow_class_agreement",
        "The same, on the frames whose active label was the class",
        labels=["deployment", "class"],
    )
    frames = CounterMetricFamily(
        P + "gate_shadow_frames", "Frames both models labelled in the shadow stage", labels=["deployment"]
    )
    pairs = CounterMetricFamily(
        P + "gate_shadow_confusions",
        "Frames the candidate labelled otherwise, by active->candidate pair (the commonest)",
        labels=["deployment", "pair"],
    )
    for key, g in sorted(gates.items()):
        st = g.streams.get(OVERALL)
        if st is None or st.d <= 0:
            continue
        overall.add_metric([key], st.n / st.d)
        frames.add_metric([key], st.d)
        for name, cs in sorted(g.streams.items()):
            if name.startswith(PER_CLASS + ":") and cs.d > 0:
                per_class.add_metric([key, name.split(":", 1)[1]], cs.n / cs.d)
        for pair, n in top_pairs(g.confusion, TOP_PAIRS).items():
            pairs.add_metric([key, pair], n)
    yield from (overall, per_class, frames, pairs)

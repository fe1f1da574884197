"""One metrics message, one wire form: :class:`gateway.core.metrics.MetricsMessage` and its
:func:`~gateway.core.metrics.encode`, which the device agent and the gateway's replay trace both
write and the ingest reads back."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.agent.shadow import reports
from gateway.agent.simulate import SimulatedInference
from gateway.agent.slots import SlotInfo
from gateway.core.aggregate import Aggregator
from gateway.core.metrics import WIRE_ORDER, MetricsMessage, encode, parse_message, parse_metrics

ROOT = Path(__file__).resolve().parents[2]
AGREEMENT = {"frames": 100, "agree": 93, "classes": {"person": [60, 57]}, "pairs": {"person->car": 3}}


def message(rng: random.Random, device: str) -> MetricsMessage:
    """A valid message with a random choice of its optional fields."""

    def maybe(x: Any) -> Any:
        return x if rng.random() < 0.7 else None

    inferences = maybe(rng.randrange(0, 5000))
    shadow = rng.random() < 0.3
    return MetricsMessage(
        device_id=maybe(device),
        timestamp=maybe(round(rng.uniform(1.6e9, 1.8e9), 3)),
        model_id=maybe(rng.choice(["detector", "seg-2"])),
        model_version=rng.choice(["1.0.0", "2.1.0-rc1"]),
        num_inferences=inferences,
        num_errors=maybe(rng.randrange(0, inferences + 1)) if inferences is not None else None,
        error_rate=maybe(rng.random()),
        cpu_percent=maybe(rng.uniform(0, 400)),
        ram_percent=maybe(rng.uniform(0, 100)),
        temperature_c=maybe(rng.uniform(-20, 110)),
        mean_confidence=maybe(rng.random()),
        unknown_rate=maybe(rng.random()),
        avg_latency_ms=maybe(rng.uniform(0.1, 900)),
        uptime_seconds=maybe(float(rng.randrange(0, 10**7))),
        class_counts=maybe({"person": rng.randrange(0, 99), "car": rng.randrange(0, 99)}),
        drift=maybe({"pc1": {"pos": {"3": 2}, "neg": {"1": 1}}}),
        agreement=AGREEMENT if shadow and rng.random() < 0.5 else None,
        shadow=shadow,
    )


@pytest.mark.parametrize("seed", range(8))
def test_a_message_encodes_and_parses_back_to_the_same_value(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        m = message(rng, "cam-7")
        wire = json.dumps(encode(m)).encode()
        assert parse_message("cam-7", wire) == m
        # in the wire form's order, absent fields left out
        keys = list(encode(m))
        assert keys == [k for k in WIRE_ORDER if k in keys]
        assert None not in encode(m).values() and encode(m).get("shadow", True) is True
        s = parse_metrics("cam-7", wire, 5.0)  # the ingest's sample of it: the same figures
        assert (s.model_version, s.inferences, s.latency_ms) == (
            m.model_version,
            m.num_inferences or 0,
            m.avg_latency_ms,
        )


def test_the_agent_s_message_and_the_trace_s_are_the_encoder_s() -> None:
    """Both are encode()'s output: a message read back and encoded again is the same, key for key and
    in order (the agent's from the simulated app; the trace's from a window of those)."""
    sim = SimulatedInference({}, interval_s=10.0, rng=random.Random(3))
    active, cand = (
        SlotInfo("a", "detector", "1.0.0", "aa" * 32),
        SlotInfo("b", "detector", "2.0.0", "bb" * 32),
    )
    agg = Aggregator(60.0)
    sent = []
    for i in range(20):
        for doc in reports("cam-1", active, cand if i % 2 else None, sim, sim.shadow):
            sent.append(doc)
            again = encode(parse_message("cam-1", json.dumps(doc).encode()))
            assert again == doc and list(again) == list(doc)  # (a whole number may come back a float)
            agg.add(parse_metrics("cam-1", doc, 1000.0 + i), {})
    assert any(d.get("shadow") for d in sent) and any("drift" in d for d in sent)
    windows = agg.close_due(2000.0)
    assert windows
    for w in windows:
        for dw in w.device_windows.values():
            doc = dw.as_message(w.key.model_id, w.key.model_version)
            again = encode(parse_message("cam-1", doc))
            assert again == doc and list(again) == list(doc)
            assert doc == encode(dw.message(w.key.model_id, w.key.model_version))


def test_the_agent_passes_the_app_s_own_fields_and_its_nulls_through() -> None:
    """The gateway judges what the app reports: a null count is sent as null (refused there and
    counted against the version), a field of the app's own goes along."""
    doc = encode(MetricsMessage.of({"num_inferences": None, "fps": 12.5}, model_version="1.0.0"))
    assert doc == {"model_version": "1.0.0", "num_inferences": None, "fps": 12.5}


def test_only_the_core_writes_a_whole_message_by_hand() -> None:
    """No dict display in the gateway names model_version with num_inferences or timestamp (a
    message built by hand; before, the agent's in gateway/agent/shadow.py and the trace's in
    gateway/core/window.py). The core builds it as a MetricsMessage, not as a dict display."""
    found = []
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if "model_version" in keys and keys & {"num_inferences", "timestamp"}:
                    found.append(str(path.relative_to(ROOT)))
    assert found == []

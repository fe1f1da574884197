"""The gates' references (each device's level on the baseline) live in a file of their own, written
only when one changes: gates.json, rewritten every window, stays small at a large site."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from gateway.core.gates import new_gate
from gateway.core.settings import GateSettings
from gateway.rollout.gate_store import GateStore


def _gate(devices: int):  # type: ignore[no-untyped-def]
    g = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", GateSettings(), 0.0)
    ref = {f"cam-{i}": {"errors": (100.0, 1.0, 1.0, 100.0, 10_000.0, 5.0, 60.0)} for i in range(devices)}
    return dataclasses.replace(g, reference=ref)


def test_the_reference_is_written_apart_once_and_read_back(tmp_path: Path) -> None:
    store = GateStore(tmp_path)
    gate = _gate(500)
    store.save({gate.deployment: gate}, [])
    assert "cam-1" not in store.state_path.read_text()  # gates.json carries no device levels
    first = store.reference_path.stat()
    moved = dataclasses.replace(gate, wave=1)  # a step that changed the gate but not its reference
    store.save({gate.deployment: moved}, [])
    assert store.reference_path.stat().st_mtime_ns == first.st_mtime_ns
    assert store.reference_path.stat().st_ino == first.st_ino  # not replaced
    again = GateStore(tmp_path).load()[gate.deployment]
    assert again.wave == 1 and again.reference["cam-7"]["errors"] == gate.reference["cam-7"]["errors"]


def test_a_damaged_reference_file_is_moved_aside_and_the_gates_load(tmp_path: Path) -> None:
    store = GateStore(tmp_path)
    gate = _gate(3)
    store.save({gate.deployment: gate}, [])
    store.reference_path.write_text(json.dumps({"references": {"detector@2.0.0": {"cam-0": "x"}}}))
    loaded = GateStore(tmp_path).load()
    assert loaded[gate.deployment].reference == {}
    assert list(tmp_path.glob("gates-reference.json.corrupt-*"))

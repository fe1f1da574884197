"""Waves (:mod:`gateway.core.waves`): who is admitted in which wave."""

from __future__ import annotations

from gateway.core.waves import admit, wave_target

ELIGIBLE = {f"d{i}": {"hw": ("rev1", "rev2")[i % 2]} for i in range(100)}


def test_waves_are_sticky_ordered_and_deterministic() -> None:
    assert [wave_target((1, 5, 10, 25, 50, 100), k, 200, 2) for k in range(6)] == [2, 10, 20, 50, 100, 200]
    first = admit("m@2", ELIGIBLE, [], (1, 5, 100), 0, min_devices=1, order_attr="")
    assert first == admit("m@2", ELIGIBLE, [], (1, 5, 100), 0, min_devices=1, order_attr="")
    second = admit("m@2", ELIGIBLE, first, (1, 5, 100), 1, min_devices=1, order_attr="")
    assert len(first) + len(second) == 5
    assert not set(first) & set(second)
    by_hw = admit("m@2", ELIGIBLE, [], (50, 100), 0, min_devices=1, order_attr="hw")
    assert {ELIGIBLE[d]["hw"] for d in by_hw} == {"rev1"}  # one hardware revision first
    joined = {**ELIGIBLE, "late": {"hw": "rev1"}}
    again = admit("m@2", joined, [*first, *second], (1, 5, 100), 1, min_devices=1, order_attr="")
    assert all(d not in first and d not in second for d in again)  # nobody admitted moves

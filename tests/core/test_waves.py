"""Waves (:mod:`gateway.core.waves`): who is admitted in which wave."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.waves import admit, first_wave, first_wave_most, wave_target

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


def test_the_first_wave_grows_by_its_evidence_in_rank_order_to_twice_its_count() -> None:
    plan = (1, 5, 10, 25, 50, 100)
    counted = admit("m@2", ELIGIBLE, [], plan, 0, min_devices=2, order_attr="")
    assert (
        first_wave("m@2", ELIGIBLE, [], plan, min_devices=2, order_attr="", enough=lambda w: True) == counted
    )
    never = first_wave("m@2", ELIGIBLE, [], plan, min_devices=2, order_attr="", enough=lambda w: False)
    assert len(never) == first_wave_most(plan, len(ELIGIBLE), 2) == 4
    assert set(counted) < set(never) and set(never.values()) == {0}
    # the devices it grows by are the next in rank: among those wave 2 would have admitted
    assert set(never) < set(admit("m@2", ELIGIBLE, [], plan, 1, min_devices=2, order_attr=""))
    seen: list[int] = []

    def third(wave: Sequence[str]) -> bool:
        seen.append(len(wave))
        return len(wave) >= 3

    assert len(first_wave("m@2", ELIGIBLE, [], plan, min_devices=2, order_attr="", enough=third)) == 3
    assert seen == [2, 3]
    small = {d: ELIGIBLE[d] for d in list(ELIGIBLE)[:3]}  # capped at the site's size
    assert len(first_wave("m@2", small, [], plan, min_devices=2, order_attr="", enough=lambda w: False)) == 3
    # a device already admitted stays; the wave grows past it
    again = first_wave(
        "m@2", ELIGIBLE, list(counted), plan, min_devices=2, order_attr="", enough=lambda w: False
    )
    assert set(again) == set(never) - set(counted)

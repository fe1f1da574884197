"""The eviction choice as a pure function: LRU order, quota, and what protection keeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.eviction import (
    BlobUse,
    Named,
    Offered,
    RollbackPin,
    choose_evictions,
    offerable,
    protected,
    rollback_targets,
    running_blobs,
)

MB = 1 << 20


def sha(name: str) -> str:
    return name * 64 if len(name) == 1 else name


def use(name: str, size: int, last: float) -> BlobUse:
    return BlobUse(sha(name), size, last)


def offer(version: str, name: str, **kw: object) -> Offered:
    return Offered("detector", version, sha(name), **kw)  # type: ignore[arg-type]


# -- LRU order and the quota ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "incoming", "evict", "fits"),
    [
        (0, 100 * MB, (), True),  # 0: no quota
        (30 * MB, 0, (), True),  # under the quota: nothing goes
        (30 * MB, 5 * MB, ("a",), True),  # the least recently used goes first
        (30 * MB, 15 * MB, ("a", "c"), True),  # then the next least recently used
        (30 * MB, 25 * MB, ("a", "c", "b"), True),
        (30 * MB, 31 * MB, ("a", "c", "b"), False),  # cannot fit at all: says so
    ],
)
def test_lru_order_and_quota(quota: int, incoming: int, evict: tuple[str, ...], fits: bool) -> None:
    blobs = [use("b", 10 * MB, 20.0), use("a", 10 * MB, 10.0), use("c", 10 * MB, 15.0)]
    choice = choose_evictions(blobs, set(), quota_bytes=quota, incoming_bytes=incoming)
    assert choice.evict == tuple(sha(n) for n in evict)
    assert choice.fits is fits


def test_protected_blobs_are_skipped_and_a_refusal_evicts_only_what_helps() -> None:
    blobs = [use("a", 10 * MB, 1.0), use("b", 10 * MB, 2.0), use("c", 10 * MB, 3.0)]
    choice = choose_evictions(blobs, {sha("a")}, quota_bytes=30 * MB, incoming_bytes=5 * MB)
    assert choice.evict == (sha("b"),)
    assert choice.fits
    choice = choose_evictions(blobs, {sha("a"), sha("b"), sha("c")}, quota_bytes=30 * MB, incoming_bytes=1)
    assert choice.evict == ()
    assert not choice.fits


# -- what a device can still be offered -----------------------------------------------------------


def test_only_the_newest_allowed_version_per_model_and_cohort_is_offerable() -> None:
    deployed = [offer("1.0.0", "a"), offer("1.10.0", "c"), offer("1.2.0", "b")]
    assert offerable(deployed, now=0) == {sha("c")}  # semantic order: 1.10 > 1.2


def test_each_cohort_and_firmware_range_keeps_its_own_newest() -> None:
    deployed = [
        offer("1.0.0", "a", cohort="hw:rev1"),
        offer("2.0.0", "b", cohort="hw:rev2"),
        offer("1.5.0", "c", firmware=(None, "2.0.0")),  # for devices on older firmware
        offer("3.0.0", "d", firmware=("2.0.0", None)),
        Offered("other", "0.1.0", sha("e")),
    ]
    assert offerable(deployed, now=0) == {sha(n) for n in "abcde"}


@pytest.mark.parametrize(
    ("newest", "older_kept"),
    [
        ({}, False),
        ({"percent": 10.0}, True),  # 90 % of the devices are still offered the older one
        ({"start_time": 100.0}, True),  # not started yet: the older one is what is offered now
        ({"start_time": 50.0}, False),
        ({"held": True}, True),  # a coordinator command holds the newest back
    ],
)
def test_an_older_version_stays_offerable_while_the_newest_does_not_cover_everyone(
    newest: dict[str, object], older_kept: bool
) -> None:
    deployed = [offer("1.0.0", "a"), offer("2.0.0", "b", **newest)]
    got = offerable(deployed, now=60.0)
    assert (sha("a") in got) is older_kept
    assert (sha("b") in got) is not newest.get("held", False)


# -- running versions and the rollback target ------------------------------------------------------

NAMES = [
    Named("detector", "1.0.0", sha("a")),
    Named("detector", "2.0.0", sha("b")),
    Named("detector", "3.0.0", sha("c")),
    Named("counter", "1.0.0", sha("d")),
]


def test_versions_devices_report_running_are_protected() -> None:
    assert running_blobs([("detector", "1.0.0")], NAMES) == {sha("a")}
    assert running_blobs([(None, "2.0.0")], NAMES) == {sha("b")}  # no model named: any model's
    assert running_blobs([("counter", "2.0.0")], NAMES) == set()  # a version we never held


def test_the_rollback_pin_of_each_models_newest_version_is_protected() -> None:
    deployed = [offer("2.0.0", "b"), offer("3.0.0", "c")]
    pins = [RollbackPin("detector", "2.0.0", sha("a")), RollbackPin("detector", "3.0.0", sha("b"))]
    held = {sha(n) for n in "abc"}
    assert rollback_targets(deployed, pins, NAMES, held) == {sha("b")}  # v3's baseline, not v2's
    pins[0] = RollbackPin("detector", "2.0.0", sha("a"), halted=True)  # v2's devices go back to v1
    assert rollback_targets(deployed, pins, NAMES, held) == {sha("a"), sha("b")}
    other = [RollbackPin("counter", "2.0.0", sha("d"))]  # another model's pin is its own affair
    assert rollback_targets([*deployed, Offered("counter", "2.0.0", sha("e"))], other, NAMES, held) == {
        sha("b"),
        sha("d"),
    }


def test_before_its_gate_opens_the_newest_held_older_version_is_the_rollback_target() -> None:
    deployed = [offer("2.0.0", "b"), offer("3.0.0", "c")]
    old_pin = [RollbackPin("detector", "2.0.0", sha("a"))]  # v2's gate, superseded; v3's not open yet
    held = {sha(n) for n in "abc"}
    assert rollback_targets(deployed, old_pin, NAMES, held) == {sha("b")}
    assert rollback_targets(deployed, [], NAMES, held) == {sha("b")}
    assert rollback_targets(deployed, [], NAMES, {sha("a"), sha("c")}) == {sha("a")}  # b is gone


def test_the_quota_story_three_versions_fit_twelve_megabytes() -> None:
    """Three 5 MB versions under a 12 MB quota: the newest, and its rollback target, fit, before
    and after the gate of the newest opens."""
    blobs = [use("a", 5 * MB, 1.0), use("b", 5 * MB, 2.0)]
    deployed = [offer("2.0.0", "b"), offer("3.0.0", "c")]
    for pins in (
        [RollbackPin("detector", "2.0.0", sha("a"))],  # the gate step after v3 has not run yet
        [RollbackPin("detector", "2.0.0", sha("a")), RollbackPin("detector", "3.0.0", sha("b"))],
    ):
        keep = protected(
            deployments=deployed, running=[], pins=pins, names=NAMES, held={sha("a"), sha("b")}, now=0
        )
        assert keep == {sha("b"), sha("c")}
        choice = choose_evictions(blobs, keep, quota_bytes=12 * MB, incoming_bytes=5 * MB)
        assert choice.evict == (sha("a"),)
        assert choice.fits
    # A device still running 1.0.0 keeps it: then the quota is honestly too small, and says so.
    keep |= running_blobs([("detector", "1.0.0")], NAMES)
    assert not choose_evictions(blobs, keep, quota_bytes=12 * MB, incoming_bytes=5 * MB).fits


@given(
    sizes=st.lists(st.tuples(st.integers(1, 50), st.floats(0, 1000), st.booleans()), max_size=12),
    quota=st.integers(0, 300),
    incoming=st.integers(0, 100),
)
def test_the_choice_never_touches_protection_and_goes_least_recently_used_first(
    sizes: list[tuple[int, float, bool]], quota: int, incoming: int
) -> None:
    blobs = [BlobUse(f"{i:064x}", size * MB, last) for i, (size, last, _) in enumerate(sizes)]
    keep = {b.sha256 for b, (_, _, kept) in zip(blobs, sizes, strict=True) if kept}
    choice = choose_evictions(blobs, keep, quota_bytes=quota * MB, incoming_bytes=incoming * MB)
    by_sha = {b.sha256: b for b in blobs}
    assert not set(choice.evict) & keep
    assert len(set(choice.evict)) == len(choice.evict)
    lasts = [(by_sha[s].last_access, s) for s in choice.evict]
    assert lasts == sorted(lasts)  # least recently used first
    left = sum(b.size for b in blobs) - sum(by_sha[s].size for s in choice.evict)
    assert choice.fits is (quota == 0 or left + incoming * MB <= quota * MB)
    if choice.evict:  # nothing evicted beyond need: without the last one it would not fit
        assert left + by_sha[choice.evict[-1]].size + incoming * MB > quota * MB
    elif quota:
        # nothing evicted: either it fits already, or nothing unprotected was there to take
        assert choice.fits or all(b.sha256 in keep for b in blobs)
    if choice.fits is False:  # refused: every unprotected blob was taken, and it still does not fit
        assert set(choice.evict) == {b.sha256 for b in blobs} - keep

"""The supervision decisions, table-driven: restart delays, when a task keeps failing, fault plans."""

from __future__ import annotations

import pytest

from gateway.core import supervision as sv

POLICY = sv.Policy(initial_s=1.0, max_s=30.0, failing_after=3, window_s=60.0)


def crashed(times: list[float]) -> sv.TaskHealth:
    h = sv.TaskHealth("t")
    for t in times:
        h = sv.on_failure(h, "boom", t, POLICY)
    return h


@pytest.mark.parametrize(
    ("times", "now", "failing"),
    [
        ([], 0.0, False),
        ([0.0, 1.0], 2.0, False),
        ([0.0, 1.0, 2.0], 3.0, True),
        ([0.0, 1.0, 2.0], 59.0, True),
        ([0.0, 1.0, 2.0], 60.5, False),  # the first failure left the window
        ([0.0, 100.0, 101.0], 102.0, False),  # spread out: never three within the window
        ([0.0, 100.0, 101.0, 102.0], 103.0, True),
    ],
)
def test_a_task_keeps_failing_after_n_failures_within_the_window(
    times: list[float], now: float, failing: bool
) -> None:
    h = crashed(times)
    assert sv.is_failing(h, now, POLICY) is failing
    assert h.restarts == len(times)
    assert sv.failing((h,), now, POLICY) == (("t",) if failing else ())


@pytest.mark.parametrize("n", range(1, 12))
@pytest.mark.parametrize("rand", [0.0, 0.3, 0.999])
def test_restart_delay_grows_with_failures_is_capped_and_never_zero(n: int, rand: float) -> None:
    h = crashed([float(i) for i in range(n)])
    delay = sv.restart_delay_s(h, POLICY, rand)
    assert POLICY.initial_s / 10 <= delay <= min(POLICY.max_s, POLICY.initial_s * 2 ** (n - 1))


def test_old_failures_are_forgotten_so_backoff_starts_again() -> None:
    h = crashed([0.0, 1.0, 2.0, 3.0, 500.0])
    assert h.failures == (500.0,) and h.restarts == 5
    assert sv.restart_delay_s(h, POLICY, 0.999) <= POLICY.initial_s


def test_describe_names_the_task_and_its_last_error() -> None:
    words = sv.describe(crashed([0.0, 1.0, 2.0]), 3.0, POLICY)
    assert "task t keeps failing" in words and "3 failures" in words and "boom" in words


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("", None),
        ("seed=7", sv.FaultPlan(seed=7)),
        ("seed=7;after=0.1-0.4;times=2", sv.FaultPlan(seed=7, after_s=(0.1, 0.4), times=2)),
        (" always=uplink, site-loop ", sv.FaultPlan(always=frozenset({"uplink", "site-loop"}))),
        ("after=0.5", sv.FaultPlan(after_s=(0.5, 0.5))),
    ],
)
def test_fault_plans_parse(text: str, expect: sv.FaultPlan | None) -> None:
    assert sv.parse_fault_plan(text) == expect


@pytest.mark.parametrize("text", ["seed", "seed=x", "after=2-1", "after=-1", "color=red", "times=1.5"])
def test_a_bad_fault_plan_names_the_part(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        sv.parse_fault_plan(text)


def test_a_fault_plan_is_deterministic_per_seed_task_and_run() -> None:
    plan = sv.FaultPlan(seed=3, after_s=(0.2, 1.5), times=2, always=frozenset({"b"}))
    first = plan.delay_s("a", 0)
    assert first is not None and 0.2 <= first <= 1.5 and plan.delay_s("a", 0) == first
    assert plan.delay_s("a", 1) is not None and plan.delay_s("a", 2) is None
    assert all(plan.delay_s("b", run) is not None for run in range(50))
    assert {sv.FaultPlan(seed=s).delay_s("a", 0) for s in range(20)}.__len__() == 20

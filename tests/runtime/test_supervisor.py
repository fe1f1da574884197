"""The supervisor with real asyncio tasks: a crash is restarted within its backoff and counted; a
task that keeps failing is named; a task that returns is left finished; an injected fault restarts."""

from __future__ import annotations

import asyncio
import time

from gateway.core import supervision as sv
from gateway.runtime.supervisor import Supervisor
from tests.gw import until

FAST = sv.Policy(initial_s=0.05, max_s=0.2, failing_after=3, window_s=30.0)


async def test_a_crashed_task_comes_back_within_its_backoff_and_is_counted() -> None:
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("first run breaks")
        await asyncio.sleep(3600)

    sup = Supervisor(FAST)
    try:
        sup.supervise("flaky", flaky)
        await until(lambda: len(runs) == 2, what="the restart")
        assert runs[1] - runs[0] <= FAST.max_s + 0.2
        [snap] = sup.snapshot()
        assert snap["restarts"] == 1 and snap["state"] == "running" and not snap["failing"]
        assert "first run breaks" in snap["last_error"] and sup.failing() == ()
    finally:
        await sup.close()


async def test_a_task_that_keeps_failing_is_named_and_still_restarted() -> None:
    runs = 0

    async def broken() -> None:
        nonlocal runs
        runs += 1
        raise OSError("disk gone")

    sup = Supervisor(FAST)
    try:
        sup.supervise("broken", broken)
        await until(lambda: sup.failing(), what="the task marked failing")
        assert "broken keeps failing" in sup.failing()[0] and "disk gone" in sup.failing()[0]
        seen = runs
        await until(lambda: runs > seen, what="restarts continuing while failing")
        assert sup.snapshot()[0]["failing"] is True
    finally:
        await sup.close()


async def test_a_task_that_returns_is_finished_not_restarted() -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    sup = Supervisor(FAST)
    sup.supervise("once", once)
    await until(lambda: sup.snapshot()[0]["state"] == "finished", what="finished")
    await asyncio.sleep(0.1)
    assert runs == 1 and sup.failing() == ()
    await sup.close()


async def test_an_injected_fault_crashes_a_run_at_its_instant_and_the_task_comes_back() -> None:
    runs: list[float] = []

    async def steady() -> None:
        runs.append(time.monotonic())
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return  # swallowing it does not hide the fault from the supervisor

    plan = sv.FaultPlan(seed=1, after_s=(0.05, 0.1), times=1)
    sup = Supervisor(FAST, faults=plan)
    try:
        sup.supervise("steady", steady)
        await until(lambda: len(runs) == 2, what="the restart after the fault")
        await asyncio.sleep(0.2)
        assert len(runs) == 2  # the plan crashes only the first run
        assert "injected fault" in sup.snapshot()[0]["last_error"]
    finally:
        await sup.close()


async def test_close_ends_every_task() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    sup = Supervisor(FAST)
    sup.supervise("forever", forever)
    await asyncio.sleep(0.01)
    await sup.close()
    assert cancelled.is_set()

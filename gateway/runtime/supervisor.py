"""The one supervisor of the gateway's long-lived tasks: each runs, and runs again after a crash.

A task that lets an exception escape is logged, counted and started again after a backoff with
jitter (:func:`gateway.core.supervision.restart_delay_s`); one that keeps failing
(:func:`gateway.core.supervision.is_failing`) is named by :meth:`Supervisor.failing`, which
readiness (``/readyz`` 503) and the systemd watchdog (no more pings) read, and by
:meth:`Supervisor.snapshot` for ``/status`` and the dashboard. It keeps being restarted meanwhile:
a task that recovers makes the gateway ready again once its failures leave the window.

A task that returns is done and not restarted (the watchdog loop outside systemd returns at once).
Time here is the monotonic clock: a wall clock set back at boot must not age or renew failures.
The test-only fault plan (``supervision.inject_faults``) cancels a task's run at the instant the
plan draws, which raises ``CancelledError`` at whatever the task awaits then, as any error would;
the supervisor counts it as the crash :class:`InjectedFault`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.core import supervision as sv
from gateway.core.settings import SupervisionSettings

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Coroutine[Any, Any, Any]]


class InjectedFault(Exception):
    """The test-only fault plan made this run raise."""


class Supervisor:
    def __init__(
        self,
        policy: sv.Policy,
        *,
        faults: sv.FaultPlan | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.faults = faults
        self.clock = clock
        self.rand = rand
        self.health: dict[str, sv.TaskHealth] = {}
        self.state: dict[str, str] = {}  # running, restarting (waiting its backoff), finished
        self._keepers: dict[str, asyncio.Task[None]] = {}
        self._warned: set[str] = set()

    @classmethod
    def from_settings(cls, s: SupervisionSettings) -> Supervisor:
        """The supervisor the ``[supervision]`` section describes (with its test-only fault plan)."""
        policy = sv.Policy(s.restart_initial_s, s.restart_max_s, s.failing_after, s.failing_window_s)
        return cls(policy, faults=sv.parse_fault_plan(s.inject_faults))

    def supervise(self, name: str, factory: TaskFactory) -> None:
        """Run ``factory()`` as the task ``name`` now, and again after each crash."""
        if name in self._keepers:
            raise ValueError(f"task {name} is already supervised")
        self.health[name] = sv.TaskHealth(name)
        keeper = asyncio.get_running_loop().create_task(self._keep(name, factory), name=f"supervise {name}")
        self._keepers[name] = keeper

    def failing(self) -> tuple[str, ...]:
        """Words for each task that keeps failing (empty when none does)."""
        now = self.clock()
        return tuple(
            sv.describe(h, now, self.policy)
            for h in self.health.values()
            if sv.is_failing(h, now, self.policy)
        )

    def snapshot(self) -> list[dict[str, Any]]:
        """Each task's state for ``/status``: restarts, failing, the last error and how long ago."""
        now = self.clock()
        return [
            {
                "name": h.name,
                "state": self.state.get(h.name, "running"),
                "restarts": h.restarts,
                "failing": sv.is_failing(h, now, self.policy),
                "last_error": h.last_error,
                "last_failure_ago_s": None
                if h.last_failure_at is None
                else round(now - h.last_failure_at, 1),
            }
            for h in self.health.values()
        ]

    async def _keep(self, name: str, factory: TaskFactory) -> None:
        run = 0
        while True:
            self.state[name] = "running"
            error = await self._run_once(name, factory(), run)
            run += 1
            if error is None:
                self.state[name] = "finished"
                log.debug("task %s finished", name)
                return
            now = self.clock()
            health = sv.on_failure(self.health[name], error, now, self.policy)
            self.health[name] = health
            delay = sv.restart_delay_s(health, self.policy, self.rand())
            self.state[name] = "restarting"
            if sv.is_failing(health, now, self.policy):
                if name not in self._warned:
                    self._warned.add(name)
                    log.error(
                        "%s: the gateway is not ready until it recovers",
                        sv.describe(health, now, self.policy),
                    )
            else:
                self._warned.discard(name)
            log.info("task %s restarts in %.2f s (restart %d)", name, delay, health.restarts)
            await asyncio.sleep(delay)

    async def _run_once(self, name: str, coro: Coroutine[Any, Any, Any], run: int) -> str | None:
        """One run; the error that ended it (words), None when it returned."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        injected = False

        def inject() -> None:
            nonlocal injected
            injected = True
            task.cancel()

        delay = self.faults.delay_s(name, run) if self.faults is not None else None
        timer = asyncio.get_running_loop().call_later(delay, inject) if delay is not None else None
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # the supervisor is closing: the run goes with it
            task.cancel()
            await asyncio.wait({task})
            raise
        finally:
            if timer is not None:
                timer.cancel()
        exc: BaseException | None
        if injected:  # counted as a crash even if the task swallowed the cancellation
            exc = InjectedFault(f"injected fault at {delay:.2f} s")
        elif task.cancelled():
            exc = RuntimeError("cancelled from outside")
        else:
            exc = task.exception()
            if exc is None:
                return None
        log.error("task %s crashed: %r", name, exc, exc_info=None if injected else exc)
        return repr(exc)

    async def close(self, timeout_s: float = 5.0) -> None:
        keepers = list(self._keepers.values())
        for keeper in keepers:
            keeper.cancel()
        if keepers:
            await asyncio.wait(keepers, timeout=timeout_s)
        self._keepers.clear()

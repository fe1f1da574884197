"""Supervision decisions: how long to wait before a crashed task runs again, and when a task that
keeps crashing makes the gateway not ready. Values and ``now`` in, decisions out.

The I/O side (:mod:`gateway.runtime.supervisor`) runs the tasks, measures ``now`` on a monotonic clock
and carries these decisions out: it sleeps the delay, restarts the task, and reports the failing
ones to readiness and the systemd watchdog. A test-only fault plan (:class:`FaultPlan`, the setting
``supervision.inject_faults``) says when a task is made to raise, so a chaos test can crash every
task at a random instant over many seeds; it is empty, and does nothing, in production.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field, replace

from gateway.core.pacing import backoff_s


@dataclass(frozen=True)
class Policy:
    """``failing_after`` failures within ``window_s`` seconds: the task keeps failing."""

    initial_s: float = 1.0
    max_s: float = 60.0
    failing_after: int = 5
    window_s: float = 600.0


@dataclass(frozen=True)
class TaskHealth:
    """One supervised task's record: its restarts, its recent failures (times) and the last error."""

    name: str
    restarts: int = 0
    failures: tuple[float, ...] = ()  # times of the failures within the policy's window
    last_error: str | None = None
    last_failure_at: float | None = None


def on_failure(health: TaskHealth, error: str, now: float, policy: Policy) -> TaskHealth:
    """The record after a crash at ``now`` (failures older than the window are forgotten)."""
    recent = (*(t for t in health.failures if now - t < policy.window_s), now)
    return replace(
        health, restarts=health.restarts + 1, failures=recent, last_error=error, last_failure_at=now
    )


def restart_delay_s(health: TaskHealth, policy: Policy, rand: float) -> float:
    """How long to wait before the next run: exponential in the recent failures, with full jitter,
    at most ``max_s``; ``rand`` uniform in [0, 1). Never less than a tenth of ``initial_s``, so a
    task that crashes at once cannot spin the loop."""
    attempt = max(0, len(health.failures) - 1)
    floor = policy.initial_s / 10
    return max(floor, backoff_s(attempt, initial_s=policy.initial_s, max_s=policy.max_s, rand=rand))


def is_failing(health: TaskHealth, now: float, policy: Policy) -> bool:
    recent = sum(1 for t in health.failures if now - t < policy.window_s)
    return recent >= policy.failing_after


def failing(healths: tuple[TaskHealth, ...], now: float, policy: Policy) -> tuple[str, ...]:
    """The names of the tasks that keep failing, in the order given."""
    return tuple(h.name for h in healths if is_failing(h, now, policy))


def describe(health: TaskHealth, now: float, policy: Policy) -> str:
    """Words for people: why a failing task makes the gateway not ready."""
    recent = sum(1 for t in health.failures if now - t < policy.window_s)
    return (
        f"task {health.name} keeps failing ({recent} failures in {policy.window_s:g} s, "
        f"{health.restarts} restarts; last: {health.last_error})"
    )


# -- test-only fault injection -------------------------------------------------------------------


@dataclass(frozen=True)
class FaultPlan:
    """When supervised tasks are made to raise (tests only; empty in production).

    Written ``seed=7;after=0.2-1.5;times=1;always=blob-scrub,uplink``: each task's first ``times``
    runs raise at a random instant ``after`` seconds into the run (drawn from ``seed`` and the task's
    name); the tasks named in ``always`` raise on every run (a task that keeps failing).
    """

    seed: int = 0
    after_s: tuple[float, float] = (0.2, 1.5)
    times: int = 1
    always: frozenset[str] = field(default_factory=frozenset)

    def delay_s(self, task: str, run: int) -> float | None:
        """Seconds into run ``run`` (0 the first) at which ``task`` raises, None: it does not."""
        if run >= self.times and task not in self.always:
            return None
        rng = random.Random(self.seed * 1_000_003 + zlib.crc32(task.encode()) + run * 7919)
        return rng.uniform(*self.after_s)


def parse_fault_plan(text: str) -> FaultPlan | None:
    """The plan in ``text`` (see :class:`FaultPlan`), None for an empty text; ValueError naming
    the part that is wrong."""
    if not text.strip():
        return None
    plan = FaultPlan()
    for part in text.split(";"):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise ValueError(f"{part!r}: expected key=value")
        try:
            if key == "seed":
                plan = replace(plan, seed=int(value))
            elif key == "after":
                low, _, high = value.partition("-")
                after = (float(low), float(high or low))
                if not 0 <= after[0] <= after[1]:
                    raise ValueError
                plan = replace(plan, after_s=after)
            elif key == "times":
                plan = replace(plan, times=max(0, int(value)))
            elif key == "always":
                plan = replace(plan, always=frozenset(n.strip() for n in value.split(",") if n.strip()))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{part.strip()!r}: expected seed=N, after=S-S, times=N or always=a,b") from None
    return plan

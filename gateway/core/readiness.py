"""Whether the gateway is ready to serve its site, and if not, why: values in, reasons out.

Ready means a device asking now gets a real answer: a signed index is accepted and not expired, the
clock is trusted (else no windowed deployment is offered and expiry is judged at the floor), the
store can write (else nothing new can be mirrored), every configured listener is up, and no
long-lived task keeps failing (:mod:`gateway.core.supervision`). ``/readyz``
answers 503 with these reasons, and the systemd ``STATUS=`` line shows them. Alive (``/healthz``)
is less: the event loop answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ReadinessFacts:
    index_version: int | None  # the accepted index, None before the first
    index_expires: float | None
    now: float  # the trusted now (the floor when the clock is not trusted)
    clock_trusted: bool
    store_problem: str | None  # why the store cannot write, None when it can
    listeners_down: Sequence[str] = ()  # configured listeners not listening (yet)
    failing_tasks: Sequence[str] = ()  # words for each long-lived task that keeps failing


def not_ready(facts: ReadinessFacts) -> tuple[str, ...]:
    """The reasons the gateway is not ready, in a stable order; empty when it is."""
    reasons: list[str] = []
    if facts.index_version is None:
        reasons.append("no signed index accepted yet")
    elif facts.index_expires is not None and facts.index_expires <= facts.now:
        reasons.append(f"index version {facts.index_version} expired (the upstream must publish a new one)")
    if not facts.clock_trusted:
        reasons.append("clock not trusted (earlier than the newest signed index: set the time, NTP)")
    if facts.store_problem:
        reasons.append(f"store not writable: {facts.store_problem}")
    reasons.extend(f"{name} listener not up" for name in facts.listeners_down)
    reasons.extend(facts.failing_tasks)
    return tuple(reasons)

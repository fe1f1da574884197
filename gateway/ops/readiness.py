"""Readiness from the running components: the facts :mod:`gateway.core.readiness` judges.

The store check writes, and removes, a small file in the data folder in a worker thread (never on
the event loop): a read-only or full file system shows up here before the first transfer fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.core.readiness import ReadinessFacts, not_ready
from gateway.core.settings import Settings
from gateway.mirror.mirror import Mirror
from gateway.trust.state import TrustState

log = logging.getLogger(__name__)

PROBE_NAME = ".ready-probe"


def store_problem(folder: Path) -> str | None:
    """Why a file cannot be written in ``folder`` (blocking), None when it can."""
    path = folder / f"{PROBE_NAME}-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        os.unlink(path)
    except OSError as exc:
        return f"{folder}: {exc.strerror or exc}"
    return None


def listener_state(
    settings: Settings, http: Sequence[Any], operator: Sequence[Any], mqtt: Mapping[str, Any]
) -> dict[str, bool]:
    """The configured listeners, True once bound: the device API, the operator API, the broker's
    ``tcp`` and ``tls`` listeners (``mqtt``: the broker's bound addresses by name)."""
    up = {"device http": bool(http)}
    if settings.operator.listen:
        up["operator"] = bool(operator)
    embedded = settings.mqtt.mode == "embedded"  # external: we listen on nothing for MQTT
    if embedded and settings.mqtt.listen:
        up["mqtt"] = "tcp" in mqtt
    if embedded and settings.mqtt.tls_listen:
        up["mqtt tls"] = "tls" in mqtt
    return up


class Readiness:
    """``listeners``: the configured listeners by name, True when they listen; ``failing``: the
    supervisor's words for each task that keeps failing."""

    def __init__(
        self,
        *,
        trust: TrustState,
        mirror: Mirror,
        data: Path,
        listeners: Callable[[], Mapping[str, bool]],
        clock: Callable[[], float],
        failing: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self.trust = trust
        self.mirror = mirror
        self.data = data
        self.listeners = listeners
        self.clock = clock
        self.failing = failing  # the supervisor's words for the tasks that keep failing

    async def reasons(self) -> tuple[str, ...]:
        """Empty when ready."""
        problem = await asyncio.to_thread(store_problem, self.data)
        reading = self.trust.clock(self.clock())
        index = self.mirror.index
        return not_ready(
            ReadinessFacts(
                index_version=index.version if index else None,
                index_expires=index.expires if index else None,
                now=reading.now,
                clock_trusted=reading.trusted,
                store_problem=problem,
                listeners_down=tuple(name for name, up in self.listeners().items() if not up),
                failing_tasks=tuple(self.failing()),
            )
        )

    async def watch(self, interval_s: float = 5.0) -> None:
        """Log each change of readiness, from the first look on: "ready" once a device asking gets
        a real answer, or what it still waits for (an index, the clock, a listener, a task), so
        ``serve``'s log follows a first publish through to ready."""
        said: tuple[str, ...] | None = None
        while True:
            reasons = await self.reasons()
            if reasons != said:
                index = self.mirror.index
                if not reasons:
                    log.info(
                        "ready: index version %s in effect; devices get real answers",
                        index.version if index else "-",
                    )
                else:
                    log.info("not ready yet: %s", "; ".join(reasons))
                said = reasons
            await asyncio.sleep(interval_s)

    async def status_line(self) -> str:
        """One line for systemd's ``STATUS=``: the index held, and ready or why not."""
        reasons = await self.reasons()
        index = self.mirror.index
        head = f"index {index.version if index else 'none'}"
        return f"{head}: ready" if not reasons else f"{head}: not ready: " + "; ".join(reasons)

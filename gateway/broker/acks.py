"""The acknowledgements one connection owes, each held until its message is durable.

The ingest hook answers a message with a future (the outbox commit) or with None (nothing to wait
for). An acknowledgement leaves only once its future has succeeded, and all of them leave in the
order their PUBLISH packets came [MQTT-4.6.0-2]: one that is ready waits behind an older one that
is not. Only the oldest waiting future is watched; when it resolves, every acknowledgement that is
ready then goes out in one write (one grouped outbox commit makes many of them durable at once).
A failed future stops the line: the ones before it go out, it and the ones after it never do, and
the owner closes the connection (the client sends them again).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

Durable = asyncio.Future[Any]


class Acks:
    """``send(bytes)`` writes acknowledgements; ``failed(future)`` is told of a failed one."""

    __slots__ = ("_failed", "_queue", "_send")

    def __init__(self, send: Callable[[bytes], None], failed: Callable[[Durable], None]) -> None:
        self._send = send
        self._failed = failed
        self._queue: deque[tuple[Durable | None, bytes]] | None = None  # only while some wait

    def add(self, ack: bytes, durable: Durable | None) -> None:
        """Send ``ack`` once ``durable`` (if any) has succeeded and every earlier one has gone."""
        queue = self._queue
        if queue is None:
            if durable is None:
                self._send(ack)
                return
            queue = self._queue = deque()
        elif queue[-1][0] is durable:  # the same commit as the one before (a grouped append)
            queue[-1] = (durable, queue[-1][1] + ack)
            return
        queue.append((durable, ack))
        if len(queue) == 1:
            durable.add_done_callback(self._ready)  # type: ignore[union-attr]

    def _ready(self, _done: Any = None) -> None:
        queue = self._queue
        ready: list[bytes] = []
        while queue:
            durable, ack = queue[0]
            if durable is not None:
                if not durable.done():
                    durable.add_done_callback(self._ready)
                    break
                if durable.cancelled() or durable.exception() is not None:
                    self._queue = None
                    if ready:
                        self._send(b"".join(ready))
                    self._failed(durable)
                    return
            queue.popleft()
            ready.append(ack)
        if not queue:
            self._queue = None
        if ready:
            self._send(ready[0] if len(ready) == 1 else b"".join(ready))

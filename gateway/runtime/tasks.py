"""Background tasks created through one helper that names them and keeps a reference.

asyncio only keeps weak references to tasks, so a task nobody holds can vanish mid-flight; and an
exception in a fire-and-forget task is otherwise only reported at garbage collection. (The same
reasoning as mitmproxy's ``asyncio_utils.create_task``.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

LoopFactory = Callable[[], Coroutine[Any, Any, Any]]
Supervise = Callable[[str, LoopFactory], None]
"""How a component hands a long-lived loop to the gateway's one supervisor
(:meth:`gateway.runtime.supervisor.Supervisor.supervise`): the loop's name and a factory that starts a
fresh run of it. A component made without one runs its loops in its own :class:`TaskGroup`."""


class TaskGroup:
    """Owns named background tasks; logs their crashes; cancels them all on close."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn_loop(self, name: str, factory: LoopFactory, supervise: Supervise | None) -> None:
        """A long-lived loop: under the supervisor when the owner gave one, else in this group."""
        if supervise is not None:
            supervise(name, factory)
        else:
            self.spawn(factory(), name=name)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s crashed: %r", task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout_s: float = 5.0) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


async def in_thread(fn: Callable[..., T], *args: Any, discard: Callable[[T], Any] | None = None) -> T:
    """``fn(*args)`` in a worker thread, finished even when the caller is cancelled: cancellation
    waits for the thread before it goes on (a file is never closed under a read or write still
    running in it: its descriptor number may already belong to another file), and hands a result
    the thread made for nobody to ``discard`` (a file opened for a cancelled reader is closed)."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if discard is not None and not task.cancelled() and task.exception() is None:
            discard(task.result())
        raise

"""A change signal many waiters can block on: each ``notify`` wakes everyone waiting at that moment.

Long polls wait on it; the mirror (new index), the gates (a wave opened, a halt) and the inventory
notify it. Waiters re-evaluate their own answer and go back to waiting if nothing changed for them.
"""

from __future__ import annotations

import asyncio


class Changes:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.generation = 0

    def notify(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> bool:
        """True when something changed within ``timeout_s``."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

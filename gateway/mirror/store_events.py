"""The store's listener as the mirror answers it (:class:`gateway.store.events.StoreListener`).

The store is made before the mirror that needs it, so this asks for the mirror when an event comes
(after ``start``), not when it is made; a verified blob wakes the long polls waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.mirror.mirror import Mirror
from gateway.runtime.notify import Changes


class StoreEvents:
    """The store's listener (:class:`gateway.store.events.StoreListener`). The store is made
    before the mirror that needs it, so this asks for the mirror when an event comes (after
    ``start``), not when it is made."""

    def __init__(self, mirror: Callable[[], Mirror], changes: Changes) -> None:
        self._mirror = mirror
        self._changes = changes

    def retry_after_s(self, sha256: str) -> int:
        return self._mirror().retry_after_s(sha256)

    def on_miss(self, sha256: str) -> None:
        self._mirror().on_miss(sha256)

    def on_verified(self, sha256: str) -> None:
        self._changes.notify()  # long polls waiting for this blob wake

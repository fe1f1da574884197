"""What the store tells the rest of the gateway: a listener given to it at construction.

The store emits three things and knows nothing of who listens: the hint a device gets while a blob
is not verified yet, a blob that is wanted but missing, and a blob that became verified. The mirror
answers the first two (it knows the transfers), the device API's long polls wait on the third.
"""

from __future__ import annotations

from typing import Protocol


class StoreListener(Protocol):
    """What the store tells the rest of the gateway, given at construction. Called on the loop:
    none may block."""

    def retry_after_s(self, sha256: str) -> int:
        """Seconds a device should wait for a blob of a deployment in effect not yet verified."""
        ...

    def on_miss(self, sha256: str) -> None:
        """A blob in effect is wanted but not verified here (asked for, broken, quarantined)."""
        ...

    def on_verified(self, sha256: str) -> None:
        """A blob became verified (long polls waiting for it wake)."""
        ...


class Unheard:
    """No listener: a fixed hint, nothing fetched again, nobody woken (tests, maintenance commands)."""

    def retry_after_s(self, sha256: str) -> int:
        return 5

    def on_miss(self, sha256: str) -> None:
        pass

    def on_verified(self, sha256: str) -> None:
        pass

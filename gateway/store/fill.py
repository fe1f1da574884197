"""An artifact still arriving with a signed chunk list: how far it is verified, and who waits on it.

The mirror writes a partial file chunk by chunk, and only a chunk whose SHA-256 matched the signed
chunk list ever reaches the file, in order from byte 0: so every byte of the partial below
:attr:`Fill.verified` lies in a verified chunk. The download handler serves those bytes at once and
waits (:meth:`Fill.wait_past`, always with a timeout) for the next chunk to be verified. When the
mirror gives up (a bad chunk list, a whole file whose sha256 or signature fails, a full disk) the
fill fails and every waiting response is cut off; the device resumes later with ``Range``.

This is the store's side only: no network. Whether the whole artifact is ``verified`` (its events,
its ETag) is still decided once, by the whole-file sha256 and the detached signature.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.core.chunks import Chunking


class Fill:
    """One partial with a chunk list. Touched on the loop only."""

    def __init__(self, path: Path, chunking: Chunking) -> None:
        self.path = path
        self.chunking = chunking
        self.verified = 0  # bytes from 0 inside verified chunks (a chunk boundary, or the length)
        self.failed: str | None = None
        self.done = False  # the whole file verified and published
        self._moved = asyncio.Event()

    @property
    def length(self) -> int:
        return self.chunking.length

    def _wake(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()

    def advance(self, verified: int) -> None:
        """The first ``verified`` bytes are in verified chunks (it may go back when a transfer starts
        again from an earlier offset: the bytes below stay verified ones, or are gone)."""
        self.verified = min(verified, self.length)
        self._wake()

    def fail(self, reason: str) -> None:
        self.failed = reason
        self._wake()

    def finish(self) -> None:
        self.verified = self.length
        self.done = True
        self._wake()

    async def settled(self, timeout_s: float) -> bool:
        """Wait until the fill is published (True) or failed, or ``timeout_s`` passed (False)."""
        while not self.done and self.failed is None:
            try:
                await asyncio.wait_for(self._moved.wait(), timeout_s)
            except TimeoutError:
                return False
        return self.done

    async def wait_past(self, offset: int, timeout_s: float) -> bool:
        """Wait until bytes past ``offset`` are verified; False when the fill failed or nothing moved
        for ``timeout_s``."""
        while self.verified <= offset and self.failed is None:
            moved = self._moved
            try:
                await asyncio.wait_for(moved.wait(), timeout_s)
            except TimeoutError:
                return False
        return self.failed is None


class Fills:
    """The fills in progress, by sha256: begun by the mirror, looked up by the download handler."""

    def __init__(self) -> None:
        self._by_sha: dict[str, Fill] = {}

    def begin(self, sha256: str, path: Path, chunking: Chunking, verified: int) -> Fill:
        """A transfer with a chunk list (re)starts with ``verified`` bytes in verified chunks; a
        fill already waited on is kept, so its waiting responses carry on."""
        fill = self._by_sha.get(sha256)
        if fill is None or fill.failed is not None or fill.chunking != chunking or fill.path != path:
            if fill is not None and fill.failed is None:
                fill.fail("the transfer started again with another chunk list")
            fill = self._by_sha[sha256] = Fill(path, chunking)
        fill.advance(verified)
        return fill

    def get(self, sha256: str) -> Fill | None:
        fill = self._by_sha.get(sha256)
        return fill if fill is not None and fill.failed is None else None

    def fail(self, sha256: str, reason: str) -> None:
        fill = self._by_sha.pop(sha256, None)
        if fill is not None:
            fill.fail(reason)

    def finish(self, sha256: str) -> None:
        fill = self._by_sha.pop(sha256, None)
        if fill is not None:
            fill.finish()

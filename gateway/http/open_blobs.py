"""Verified blobs held open for downloads, with their response headers built once per blob.

nginx's ``open_file_cache`` for our blobs: opening, checking and closing the file for every request
cost an executor round trip (a thread wake-up each way) and six system calls, more than the
Python of the whole request. Here a blob is opened once (off the loop, without following links,
checked to be a regular file of the verified size and ctime), kept open for :data:`HOLD_S` at most,
and shared by the downloads of that time. Its ``ETag``, ``Last-Modified``, ``Content-Type`` and the
size of one multipart part header are computed at that open, not per request.

What keeps "no unverified byte is served" as strict as opening the file for each request: before
every use, one ``fstat`` of the open descriptor (metadata in memory; it never waits for the disk)
checks that the file is still a regular file of the verified size, with the ctime it had when it
was verified (a write, a truncation or a chmod moves it), and still linked (``st_nlink`` > 0: not
deleted or renamed over). If any check fails the descriptor is dropped and the blob opened again
by its path, which then finds what a fresh open always found (gone, a symlink, changed: the caller
answers 503 and the store checks the blob again). A file replaced behind the store's back while
a hard link keeps the old one alive is still the old inode: its bytes are the verified ones.

Bounds: at most :data:`MAX_OPEN` blobs are held (the oldest is let go first); each is closed when
its time is up and no download is using it, so an evicted blob's disk space comes back within
:data:`HOLD_S`. ``aclose`` closes them all (the app's cleanup).

What it leaves to others: which blob a URL names (the store), ranges and conditionals
(:mod:`gateway.http.ranges`), sending (:mod:`gateway.http.sendfile`).
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import IO

from gateway.store.lookup import Verified

HOLD_S = 2.0  # a blob stays open this long at most after its open, then is opened again
MAX_OPEN = 64  # blobs held open at once
BOUNDARY_LEN = 32  # hex characters of a multipart boundary (secrets.token_hex(16))


def part_head(boundary: str, content_type: str, content_range: str) -> bytes:
    """One ``multipart/byteranges`` part's header block (RFC 9110 14.6)."""
    return (
        f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {content_range}\r\n\r\n"
    ).encode()


def _intact(fd: int, found: Verified) -> bool:
    """The open file is still the one that was verified (see the module docstring)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == found.size
        and st.st_nlink > 0
        and (not found.ctime_ns or st.st_ctime_ns == found.ctime_ns)
    )


def open_verified(found: Verified) -> IO[bytes] | None:
    """Open the blob without following links; None unless it is a regular file of the right size
    that nobody wrote, truncated or chmod-ed since it was verified (its ctime is unchanged)."""
    try:
        fd = os.open(found.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    f = os.fdopen(fd, "rb")
    if not _intact(fd, found):
        f.close()
        return None
    return f


def _key(found: Verified) -> tuple[object, ...]:
    """What names a held blob: its content (blobs are content-addressed: one sha256, one set of
    bytes, whichever file holds them), and what its headers and checks are made of. Cheaper to hash
    than the ``Verified`` with its path, built anew by every lookup."""
    return (found.sha256, found.size, found.ctime_ns, found.mtime, found.content_type)


@dataclass(eq=False)
class OpenBlob:
    """One verified blob held open, and what every response for it says the same way."""

    found: Verified
    file: IO[bytes]
    headers: dict[str, str]  # ETag, Last-Modified, Accept-Ranges, Cache-Control, Content-Type
    part_head_len: int  # a multipart part header's bytes beside its Content-Range value
    head_fields: str  # ``headers`` as response head lines, for the fast path's heads
    users: int = 0
    expired: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @classmethod
    def of(cls, found: Verified, file: IO[bytes]) -> OpenBlob:
        headers = {
            "ETag": f'"{found.sha256}"',
            "Last-Modified": formatdate(int(found.mtime), usegmt=True),
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, no-transform",
            "Content-Type": found.content_type,
        }
        head_len = len(part_head("0" * BOUNDARY_LEN, found.content_type, ""))
        return cls(found, file, headers, head_len, "".join(f"{k}: {v}\r\n" for k, v in headers.items()))

    def intact(self) -> bool:
        return _intact(self.file.fileno(), self.found)


class OpenBlobs:
    """The blobs held open (at most :data:`MAX_OPEN`, each for :data:`HOLD_S` at most)."""

    def __init__(self, hold_s: float = HOLD_S, max_open: int = MAX_OPEN) -> None:
        self.hold_s = hold_s
        self.max_open = max_open
        self._held: dict[tuple[object, ...], OpenBlob] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._held)

    async def acquire(self, found: Verified) -> OpenBlob | None:
        """The open blob for ``found``, counted as in use until :meth:`release`; None when the file
        on disk is not the one that was verified (gone, short, not a regular file, changed)."""
        blob = self.held(found)
        if blob is None:
            f = await asyncio.get_running_loop().run_in_executor(None, open_verified, found)
            if f is None:
                return None
            blob = OpenBlob.of(found, f)
            if self._closed:  # the app stopped while the file was opened: use it once, keep nothing
                blob.expired = True
            else:
                self._hold(blob)
        self.use(blob)
        return blob

    def held(self, found: Verified) -> OpenBlob | None:
        """The blob for ``found`` if it is held open and intact now, not yet counted in use (the
        fast download path, which cannot wait for an open: it leaves the download to
        :meth:`acquire` then)."""
        blob = self._held.get(_key(found))
        if blob is not None and not blob.intact():
            self._let_go(blob)
            return None
        return blob

    def use(self, blob: OpenBlob) -> None:
        """Count ``blob`` in use until :meth:`release`."""
        blob.users += 1

    def release(self, blob: OpenBlob) -> None:
        blob.users -= 1
        if blob.expired and blob.users == 0:
            blob.file.close()

    def _hold(self, blob: OpenBlob) -> None:
        key = _key(blob.found)
        if (old := self._held.get(key)) is not None:  # opened twice at once: the newer stays
            self._let_go(old)
        while len(self._held) >= self.max_open:
            self._let_go(next(iter(self._held.values())))  # the oldest open
        self._held[key] = blob
        blob.timer = asyncio.get_running_loop().call_later(self.hold_s, self._let_go, blob)

    def _let_go(self, blob: OpenBlob) -> None:
        """Stop handing ``blob`` out; its file closes now, or when its last download ends."""
        if blob.expired:
            return
        blob.expired = True
        key = _key(blob.found)
        if self._held.get(key) is blob:
            del self._held[key]
        if blob.timer is not None:
            blob.timer.cancel()
            blob.timer = None
        if blob.users == 0:
            blob.file.close()

    async def aclose(self) -> None:
        self._closed = True
        for blob in list(self._held.values()):
            self._let_go(blob)

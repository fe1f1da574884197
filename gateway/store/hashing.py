"""Hashing a stored blob again, off the event loop: paced for the scrub, safe to cancel.

:func:`hash_file` reads in a worker thread, chunk by chunk (at most ``rate_bytes_per_s`` when
given), and says whether the file still holds the blob it is named after; :mod:`gateway.store.artifacts`
decides what to do with the answer; :class:`ScrubReport` is what one scrub pass found.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.core.human import size

log = logging.getLogger("gateway.store.artifacts")

HASH_CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class Inode:
    """The file that was hashed: its inode number and its ctime when the hash began."""

    number: int
    ctime_ns: int


class Hashed(enum.StrEnum):
    GOOD = "good"
    MISMATCH = "mismatch"
    MISSING = "missing"  # gone, not a regular file, or unreadable


@dataclass
class ScrubReport:
    """The last scrub pass, for status."""

    started_at: float | None = None
    finished_at: float | None = None
    blobs: int = 0
    bytes: int = 0
    mismatches: list[str] = field(default_factory=list)  # sha256 quarantined in this pass
    missing: list[str] = field(default_factory=list)
    passes: int = 0
    total_mismatches: int = 0  # since the start

    def words(self) -> str:
        """The pass for the log: "3 blobs, 30.0 MB re-hashed, 0 mismatched, 0 missing"."""
        done = f"{self.blobs} blobs, {size(self.bytes)} re-hashed"
        return f"{done}, {len(self.mismatches)} mismatched, {len(self.missing)} missing"

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "mismatches": list(self.mismatches),
            "missing": list(self.missing),
            "passes": self.passes,
            "total_mismatches": self.total_mismatches,
        }


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` that, when cancelled, still waits for the worker: the file descriptor
    it reads must not be closed (and its number reused) under it."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


def _read_into(fd: int, h: Any, size: int) -> int:
    chunk = os.read(fd, size)
    h.update(chunk)
    return len(chunk)


async def hash_file(path: Path, sha: str, *, rate_bytes_per_s: float) -> tuple[Hashed, Inode | None, int]:
    """Hash the blob at ``path`` in chunks in a worker thread, paced to ``rate_bytes_per_s`` (0: no pacing).
    Returns the outcome, the file hashed and the bytes read. A file written while it was hashed
    counts as a mismatch: what was hashed is not what is there."""
    try:
        # Opened and closed in the loop (fast syscalls), so a cancellation cannot leak it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return Hashed.MISSING, None, 0
    done = 0
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Hashed.MISSING, None, 0
        inode = Inode(st.st_ino, st.st_ctime_ns)
        h = hashlib.sha256()
        size = HASH_CHUNK if rate_bytes_per_s <= 0 else max(64 << 10, min(HASH_CHUNK, int(rate_bytes_per_s)))
        started = time.monotonic()
        while True:
            try:
                n = await _in_thread(_read_into, fd, h, size)
            except OSError as exc:
                log.error("blob %s unreadable: %s", sha, exc)
                return Hashed.MISMATCH, inode, done
            if not n:
                break
            done += n
            if rate_bytes_per_s > 0:
                wait = started + done / rate_bytes_per_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # the scrub's pace, not a synchronisation
        same = os.fstat(fd).st_ctime_ns == inode.ctime_ns
        return (Hashed.GOOD if same and h.hexdigest() == sha else Hashed.MISMATCH), inode, done
    finally:
        os.close(fd)

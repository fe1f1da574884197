"""Content-addressed blobs on disk: verified files apart from partial ones, published atomically.

Layout under the data folder::

    blobs/sha256/<hex>        verified artifact bytes, read-only, named by their sha256
    blobs/sha256/<hex>.sig    the cloud's detached signature over them, verified
    partial/<hex>.part        a transfer in progress (never served)
    partial/<hex>.json        what the transfer resumes with: source URL, upstream ETag
    quarantine/<hex>-<time>   a blob whose bytes stopped matching its name, moved aside (bounded)

A blob reaches ``blobs/`` only by ``publish``: fsync the partial, rename it into place, fsync the
folder. A crash at any instant leaves either no blob (the partial resumes or is dropped) or the
whole verified blob. Every method blocks: call them from a worker thread (``asyncio.to_thread``).
Decisions (what to evict) live in :mod:`gateway.core.eviction`; this module only does the disk.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.errors import DamagedStateError, StorageError
from gateway.runtime import atomic

log = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]{64}$")
HASH_CHUNK = 1 << 20
QUARANTINE_MAX_FILES = 4  # blobs kept aside for a look; the oldest go first
QUARANTINE_MAX_BYTES = 1 << 30


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int
    mtime: float
    sig_size: int
    sig_sha256: str
    ctime_ns: int = 0  # changes with any write, chmod or utime: the file is no longer the one verified


def _storage_error(what: str, path: Path, exc: OSError) -> StorageError:
    reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return StorageError(f"{what} {path}: {reason}", path=str(path))


def hash_file(path: Path, limit: int | None = None) -> tuple[str, int]:
    """sha256 and length of ``path`` (of its first ``limit`` bytes)."""
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as f:
        while limit is None or n < limit:
            chunk = f.read(HASH_CHUNK if limit is None else min(HASH_CHUNK, limit - n))
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _quarantined_at(path: Path) -> tuple[int, str]:
    stamp = path.name.rpartition("-")[2]
    return (int(stamp) if stamp.isdigit() else 0, path.name)


class BlobStore:
    def __init__(self, data_dir: Path) -> None:
        self.blob_dir = data_dir / "blobs" / "sha256"
        self.partial_dir = data_dir / "partial"
        self.quarantine_dir = data_dir / "quarantine"

    def create_dirs(self) -> None:
        """Blocking: the blob and partial folders (the constructor touches no disk: this runs in
        the store's ``open``, under the data folder's lock)."""
        for d in (self.blob_dir, self.partial_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _storage_error("cannot create", d, exc) from exc

    # -- verified blobs ---------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        if not _HEX.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.blob_dir / sha256

    def sig_path(self, sha256: str) -> Path:
        return self.blob_path(sha256).with_name(sha256 + ".sig")

    def info(self, sha256: str) -> BlobInfo | None:
        try:
            st = os.stat(self.blob_path(sha256), follow_symlinks=False)
            sig = self.sig_path(sha256).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error("cannot read", self.blob_path(sha256), exc) from exc
        return BlobInfo(
            sha256, st.st_size, st.st_mtime, len(sig), hashlib.sha256(sig).hexdigest(), st.st_ctime_ns
        )

    def open(self) -> list[str]:
        """Blocking: make the folders (see :meth:`create_dirs`), then the verified blobs' names."""
        self.create_dirs()
        return self.list_blobs()

    def list_blobs(self) -> list[str]:
        if not self.blob_dir.is_dir():  # a reader on a folder no gateway has opened yet
            return []
        return sorted(p.name for p in self.blob_dir.iterdir() if _HEX.match(p.name))

    def check(self, sha256: str) -> BlobInfo | None:
        """Re-hash a blob; one whose bytes no longer match its name (or lacks a signature) is removed."""
        path = self.blob_path(sha256)
        try:
            if path.is_symlink() or not path.is_file():
                raise FileNotFoundError(path)
            actual, _ = hash_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("blob %s unreadable (%s): removing it", sha256, exc)
            actual = ""
        if actual != sha256:
            where = self.quarantine(sha256, inode=None, now=time.time())
            log.error(
                "blob %s is corrupt on disk: quarantined as %s, it will be fetched again", sha256, where
            )
            return None
        if not self.sig_path(sha256).exists():
            log.error("blob %s is unsigned on disk: removing it, it will be fetched again", sha256)
            self.remove(sha256)
            return None
        return self.info(sha256)

    def quarantine(
        self,
        sha256: str,
        *,
        inode: int | None,
        now: float,
        max_files: int = QUARANTINE_MAX_FILES,
        max_bytes: int = QUARANTINE_MAX_BYTES,
    ) -> Path | None:
        """Move a blob whose bytes no longer match its name (and its signature) aside, not deleted,
        for a person to look at; the folder keeps at most ``max_files`` and ``max_bytes`` (oldest
        dropped first, the newest always kept). ``inode`` is the file that was hashed: a blob
        published again meanwhile (a new file) is left alone. Returns where it went."""
        path = self.blob_path(sha256)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if inode is not None and st.st_ino != inode:
            return None
        dest = self.quarantine_dir / f"{sha256}-{int(now)}"
        try:
            self.quarantine_dir.mkdir(exist_ok=True)
            os.replace(path, dest)
            sig = self.sig_path(sha256)
            if sig.exists():
                os.replace(sig, dest.with_name(dest.name + ".sig"))
            atomic.fsync_dir(self.blob_dir)
            atomic.fsync_dir(self.quarantine_dir)
        except OSError as exc:
            raise _storage_error("cannot quarantine", path, exc) from exc
        self._bound_quarantine(max_files, max_bytes)
        return dest

    def _bound_quarantine(self, max_files: int, max_bytes: int) -> None:
        files = [p for p in self.quarantine_dir.iterdir() if not p.name.endswith(".sig")]
        files.sort(key=_quarantined_at, reverse=True)  # newest first
        total = 0
        for i, p in enumerate(files):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                continue
            if i > 0 and (i >= max_files or total > max_bytes):
                p.unlink(missing_ok=True)
                p.with_name(p.name + ".sig").unlink(missing_ok=True)

    def quarantined(self) -> list[str]:
        try:
            return sorted(p.name for p in self.quarantine_dir.iterdir() if not p.name.endswith(".sig"))
        except FileNotFoundError:
            return []

    def remove(self, sha256: str) -> None:
        for p in (self.blob_path(sha256), self.sig_path(sha256)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        atomic.fsync_dir(self.blob_dir)

    def publish(self, sha256: str, signature: bytes) -> BlobInfo:
        """Move a complete, verified partial into place, signature first (a blob is never unsigned)."""
        part = self.partial_path(sha256)
        dest = self.blob_path(sha256)
        try:
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            atomic.write_bytes(self.sig_path(sha256), signature, mode=0o444)
            os.chmod(part, 0o444)
            os.replace(part, dest)
            atomic.fsync_dir(self.blob_dir)
        except OSError as exc:
            raise _storage_error("cannot publish", dest, exc) from exc
        self.drop_partial(sha256)
        info = self.info(sha256)
        assert info is not None
        return info

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.blob_dir.iterdir())

    # -- partial transfers ------------------------------------------------------------------------

    def partial_path(self, sha256: str) -> Path:
        self.blob_path(sha256)  # validates the name
        return self.partial_dir / f"{sha256}.part"

    def partial_state(self, sha256: str) -> tuple[int, dict[str, Any]]:
        """Bytes already on disk and the resume metadata (``{}`` when none)."""
        try:
            size = self.partial_path(sha256).stat().st_size
        except FileNotFoundError:
            return 0, {}
        path = self.partial_dir / f"{sha256}.json"
        try:
            meta = atomic.read_json(path, {}) or {}
            if not isinstance(meta, dict):
                raise DamagedStateError(
                    str(path), f"wrong schema (expected an object, found {type(meta).__name__})"
                )
        except DamagedStateError as exc:
            # Without its validators the bytes cannot be trusted to resume: start over from byte 0
            # (the transfer truncates the partial; it is only a cache of what the upstream has).
            atomic.recovered(path, exc.problem, "the transfer starts again from byte 0")
            return 0, {}
        return size, meta

    def save_partial_meta(self, sha256: str, meta: dict[str, Any]) -> None:
        atomic.write_json(self.partial_dir / f"{sha256}.json", meta)

    def open_partial(self, sha256: str, offset: int) -> Any:
        """Open the partial for appending at ``offset`` (truncating anything after it)."""
        path = self.partial_path(sha256)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            return os.fdopen(fd, "wb", buffering=0)
        except OSError as exc:
            raise _storage_error("cannot write", path, exc) from exc

    def append(self, f: Any, data: bytes) -> None:
        try:
            f.write(data)
        except OSError as exc:
            raise _storage_error(
                "cannot write", Path(f.name if isinstance(f.name, str) else "partial"), exc
            ) from exc

    def drop_partial(self, sha256: str) -> None:
        for p in (self.partial_path(sha256), self.partial_dir / f"{sha256}.json"):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def list_partials(self) -> list[str]:
        return sorted(p.stem for p in self.partial_dir.glob("*.part") if _HEX.match(p.stem))

    def clean_partials(self, keep: set[str]) -> list[str]:
        """Drop partials no deployment wants any more, and stray temp files; returns dropped."""
        dropped = [sha for sha in self.list_partials() if sha not in keep]
        for sha in dropped:
            self.drop_partial(sha)
        for stray in self.partial_dir.glob("*.json"):
            if stray.stem not in keep and _HEX.match(stray.stem):
                stray.unlink(missing_ok=True)
        for stray in self.blob_dir.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
        return dropped

    def free_bytes(self) -> int:
        st = os.statvfs(self.blob_dir)
        return st.f_bavail * st.f_frsize

"""Crash-safe file writes: temp file in the same folder, fsync, ``os.replace``, fsync the folder.

After a crash at any instant the path holds either the old bytes or the new ones, never a mix
(the python-tuf ``persist_temp_file`` pattern, plus the directory fsync that makes the rename
itself durable on ext4/f2fs after a power cut).

Damaged state is never deleted: :func:`move_aside` renames it to ``<name>.corrupt-<UTC time>``
beside itself, and :func:`recovered` logs the one line that says what was found and done (the
table of every file and its recovery is in the README, "State files and their recovery").
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.core.errors import DamagedStateError, StorageError

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    try:  # the temp file too: out of descriptors or a read-only disk is a StorageError, not an OSError
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}", path=str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}", path=str(path)) from exc


def write_json(path: Path, value: Any, *, mode: int = 0o644) -> None:
    """Atomically write ``value`` as pretty, sorted JSON (diffable by a person on site)."""
    data = json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
    write_bytes(path, data, mode=mode)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file written by :func:`write_json`; ``default`` when it does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise DamagedStateError(str(path), f"not valid JSON ({exc})") from exc


def move_aside(path: Path, now: float | None = None) -> Path | None:
    """Rename a damaged file to ``<name>.corrupt-<UTC time>`` beside it; None when it is not there.

    Never deletes: the bytes stay for a person to look at (and to remove by hand)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, dest)
        fsync_dir(path.parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot move {path} aside: {exc.strerror or exc}", path=str(path)) from exc
    return dest


def recovered(path: Path, problem: str, action: str, moved_to: Path | None = None) -> dict[str, Any]:
    """Log the one line about a damaged state file and return its record for ``/status``."""
    where = f" (moved to {moved_to.name})" if moved_to is not None else ""
    log.error("recovered %s: %s; %s%s", path, problem, action, where)
    return {
        "file": str(path),
        "problem": problem,
        "action": action,
        "moved_to": str(moved_to) if moved_to is not None else None,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

"""Crash-safe file writes: temp file in the same folder, fsync, ``os.replace``, fsync the folder.

After a crash at any instant the path holds either the old bytes or the new ones, never a mix
(the python-tuf ``persist_temp_file`` pattern, plus the directory fsync that makes the rename
itself durable on ext4/f2fs after a power cut).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from gateway.core.errors import StorageError


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        raise StorageError(f"{path} is not valid JSON: {exc}", path=str(path)) from exc

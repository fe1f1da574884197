"""The data folder's lock: one writer at a time (a running gateway, or a ``cache prune`` by hand).

An exclusive, non-blocking ``flock`` on ``<data>/.lock``, held for the life of the process; the
file carries the holder's pid for a human who looks. This module only takes and tests the lock;
what runs under it is the caller's business (the service, the maintenance commands).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from gateway.core.errors import ConfigError, StorageError

LOCK_NAME = ".lock"


def lock_data_dir(data: Path) -> IO[str]:
    """Hold an exclusive lock on the data folder for the life of the process."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        f = (data / LOCK_NAME).open("a+")
    except OSError as exc:
        raise ConfigError("configuration", "data_dir", f"a writable folder ({data}: {exc.strerror})") from exc
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        f.close()
        raise StorageError(f"{data} is in use by another gateway process", path=str(data)) from exc
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def data_dir_in_use(data: Path) -> bool:
    """Whether another process holds the lock now (a maintenance command refuses to run then)."""
    try:
        with (data / LOCK_NAME).open("a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False

"""Which gateway owns a data folder, and where its operator API listens: what the CLI reads to find it.

Two files in the data folder:

- ``data-id``: a random id made once, the first time a gateway runs on the folder, and never
  changed. The operator API reports it (``GET /status``, ``gateway.data_id``), so a client that
  reached *some* gateway can tell whether it is the one on this folder.
- ``gateway.json``: written atomically by the running gateway once it listens (its operator
  address as a client would connect to it, the site, the data id, its pid and start time), and
  removed when it stops cleanly. After a crash the record stays behind: the data folder's lock
  (:mod:`gateway.store.lock`) tells a live owner from a stale record.

This module only reads and writes these files; how a client uses them is
:mod:`gateway.commands.operator_client`'s business.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.core.errors import GatewayError
from gateway.runtime import atomic

DATA_ID_NAME = "data-id"
RECORD_NAME = "gateway.json"


def read_data_id(data: Path) -> str | None:
    """The folder's id, or None when no gateway has run on it yet (a client never makes one)."""
    try:
        value = (data / DATA_ID_NAME).read_text().strip()
    except OSError:
        return None
    return value or None


def ensure_data_id(data: Path) -> str:
    """The folder's id, made (atomically, once) if it has none. Called under the folder's lock."""
    value = read_data_id(data)
    if value is None:
        value = secrets.token_hex(8)
        atomic.write_bytes(data / DATA_ID_NAME, value.encode() + b"\n")
    return value


@dataclass(frozen=True)
class Record:
    """What the running gateway says about itself in ``gateway.json``."""

    operator: str  # HOST:PORT a client connects to ("" when the operator API is off)
    site: str
    data_id: str
    pid: int
    started: float  # Unix time
    version: str

    @classmethod
    def of(cls, operator_addresses: Sequence[Any], site: str, data_id: str | None, started: float) -> Record:
        """This process's record, from its operator API's bound addresses (none: the API is off)."""
        first = next((a for a in operator_addresses if isinstance(a, tuple)), None)
        return cls(
            operator=connect_address(first[0], int(first[1])) if first else "",
            site=site,
            data_id=data_id or "",
            pid=os.getpid(),
            started=started,
            version=__version__,
        )

    @classmethod
    def from_json(cls, raw: Any) -> Record | None:
        if not isinstance(raw, dict):
            return None
        try:
            return cls(
                operator=str(raw["operator"]),
                site=str(raw["site"]),
                data_id=str(raw["data_id"]),
                pid=int(raw["pid"]),
                started=float(raw["started"]),
                version=str(raw.get("version", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def connect_address(host: str, port: int) -> str:
    """A bound address as a client reaches it: a wildcard bind is reached on loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_record(data: Path, record: Record) -> None:
    atomic.write_json(data / RECORD_NAME, asdict(record))


def read_record(data: Path) -> Record | None:
    """The record in ``data``, or None (none there, or not one we can read)."""
    try:
        raw = atomic.read_json(data / RECORD_NAME, None)
    except GatewayError:  # unreadable or damaged: as good as none (the lock still tells)
        return None
    return Record.from_json(raw)


def remove_record(data: Path, pid: int | None = None) -> None:
    """Remove the record at a clean stop (only our own: ``pid`` defaults to this process)."""
    record = read_record(data)
    if record is not None and record.pid != (os.getpid() if pid is None else pid):
        return
    try:
        (data / RECORD_NAME).unlink()
    except FileNotFoundError:
        pass

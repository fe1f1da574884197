"""The trust state on disk: the last accepted index and key list, and the rollback/time floors.

Files under ``<data>/trust/`` (each written atomically):

* ``index.json``: the raw bytes of the last accepted site index, re-verified at every start;
* ``keys.json``: the raw bytes of the last accepted key list;
* ``state.json``: ``highest_version`` (the rollback floor) and ``highest_issued`` (the clock floor).

Losing ``state.json`` can only make the gateway stricter than it should be, never looser: the
index it holds is re-verified, and its version and issue time rebuild the floors.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway import atomic
from gateway.errors import FormatError, RemoteDataError
from gateway.manifest import parse_time
from gateway.trust.clock import ClockReading, judge_clock
from gateway.trust.index import SiteIndex, TrustedIndex
from gateway.trust.keys import PublicKey, keyid, parse_public_key

log = logging.getLogger(__name__)


class TrustState:
    """Owns the :class:`TrustedIndex` and its persistence. Blocking: use from a worker thread."""

    def __init__(
        self,
        directory: Path,
        root_keys: dict[str, PublicKey],
        site: str,
        min_valid_time: str,
        *,
        key_dir: Path | None = None,
    ) -> None:
        self.dir = directory
        self.configured_keys = dict(root_keys)
        self.key_dir = key_dir
        self.min_valid_time = parse_time(min_valid_time, "trust.min_valid_time")
        state = atomic.read_json(directory / "state.json", {}) or {}
        self.highest_issued = float(state.get("highest_issued", 0.0))
        self.trusted = TrustedIndex(root_keys, site, highest_version=int(state.get("highest_version", 0)))

    def refresh_keys(self) -> None:
        """Root keys = configured ones + PEM files dropped into ``key_dir`` (no restart needed)."""
        keys = dict(self.configured_keys)
        if self.key_dir is not None and self.key_dir.is_dir():
            for path in sorted(self.key_dir.glob("*.pem")):
                try:
                    key = parse_public_key(path.read_bytes(), str(path))
                except (OSError, FormatError) as exc:
                    log.error("ignoring trusted key file %s: %s", path, exc)
                    continue
                keys[keyid(key)] = key
        self.trusted.root_keys = keys

    @property
    def floor(self) -> float:
        return max(self.min_valid_time, self.highest_issued)

    def clock(self, system_now: float) -> ClockReading:
        return judge_clock(system_now, self.floor)

    def load(self, system_now: float) -> SiteIndex | None:
        """Re-verify what we held before a restart; a held index that no longer verifies is dropped."""
        self.refresh_keys()
        now = self.clock(system_now).now
        keys_path, index_path = self.dir / "keys.json", self.dir / "index.json"
        if keys_path.exists():
            try:
                self.trusted.update_key_list(keys_path.read_bytes(), now)
            except RemoteDataError as exc:
                log.warning("held key list no longer verifies, ignoring it: %s", exc)
        if not index_path.exists():
            return None
        try:
            index = self.trusted.verify_index(index_path.read_bytes(), now)
        except RemoteDataError as exc:
            log.warning("held site index no longer verifies, ignoring it: %s", exc)
            return None
        self.trusted.accept(index)
        return index

    def accept_key_list(self, raw: bytes, system_now: float) -> None:
        self.trusted.update_key_list(raw, self.clock(system_now).now)
        atomic.write_bytes(self.dir / "keys.json", raw)

    def verify(self, raw: bytes, system_now: float) -> SiteIndex:
        self.refresh_keys()
        return self.trusted.verify_index(raw, self.clock(system_now).now)

    def accept(self, index: SiteIndex) -> None:
        """Persist first, then believe: a crash in between leaves the old state whole."""
        atomic.write_bytes(self.dir / "index.json", index.raw)
        highest_issued = max(self.highest_issued, index.issued or 0.0)
        atomic.write_json(
            self.dir / "state.json",
            {
                "highest_version": max(self.trusted.highest_version, index.version),
                "highest_issued": highest_issued,
            },
        )
        self.highest_issued = highest_issued
        self.trusted.accept(index)

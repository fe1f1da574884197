"""The trust state on disk: the last accepted index and key list, and the rollback/time floors.

Files under ``<data>/trust/`` (each written atomically):

* ``index.json``: the raw bytes of the last accepted site index, re-verified at every start;
* ``keys.json``: the raw bytes of the last accepted key list;
* ``state.json``: ``highest_version`` (the rollback floor), ``highest_issued`` (the clock floor)
  and ``floor_source`` (where the clock floor came from, for ``ota-gateway trust status``);
* ``audit.jsonl``: one JSON line per ``ota-gateway trust reset-floor`` (who, why, from, to), fsynced.

Losing or damaging ``state.json`` (it is then moved aside as ``state.json.corrupt-<time>``) can
only make the gateway stricter than it should be, never looser: the index it holds is re-verified,
and its version and issue time rebuild the floors (through the same cap as any accepted index).

The clock floor only rises, and never past the trusted local time plus ``trust.max_future_skew_s``
(the rules and why are in :mod:`gateway.trust.clock`). The one way down is :meth:`TrustState.reset_floor`,
run by a person on a stopped gateway, and written to the audit file first.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError, DamagedStateError, FormatError, RemoteDataError, StorageError
from gateway.core.manifest import format_time, parse_time
from gateway.runtime import atomic
from gateway.trust.clock import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    ClockReading,
    FloorKind,
    floor_advice,
    judge_clock,
    raised_floor,
    reference_time,
    trusted_now,
)
from gateway.trust.index import SiteIndex, TrustedIndex
from gateway.trust.keys import PRIVATE_KEY_ADVICE, PublicKey, holds_private_key, keyid, parse_public_key

log = logging.getLogger(__name__)


def _state_from_json(doc: Any) -> dict[str, Any]:
    """``state.json``'s values, checked: DamagedStateError (with what is wrong) when mis-shaped."""

    def bad(problem: str) -> DamagedStateError:
        return DamagedStateError("state.json", f"wrong schema ({problem})")

    if not isinstance(doc, dict):
        raise bad(f"expected an object, found {type(doc).__name__}")
    issued = doc.get("highest_issued", 0.0)
    if isinstance(issued, bool) or not isinstance(issued, int | float) or not 0 <= issued < 1e11:
        raise bad(f"highest_issued: expected seconds since 1970, found {issued!r:.40}")
    version = doc.get("highest_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise bad(f"highest_version: expected a whole number, found {version!r:.40}")
    source = doc.get("floor_source")
    if source is not None and not isinstance(source, dict):
        raise bad(f"floor_source: expected an object, found {type(source).__name__}")
    return doc


class TrustState:
    """Owns the :class:`TrustedIndex` and its persistence. Blocking: use from a worker thread."""

    HELD = "index.json"  # the accepted index's raw bytes (TUF: every metadata file of the set)

    def __init__(
        self,
        directory: Path,
        root_keys: dict[str, PublicKey],
        site: str,
        min_valid_time: str,
        *,
        key_dir: Path | None = None,
        max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
    ) -> None:
        self.dir = directory
        self.configured_keys = dict(root_keys)
        self.key_dir = key_dir
        self.min_valid_time = parse_time(min_valid_time, "trust.min_valid_time")
        self.max_future_skew_s = max_future_skew_s
        self.recovered: list[dict[str, Any]] = []  # a damaged state.json found here (for /status)
        self._rebuild_floors = False  # state.json was damaged: rebuild from the held index in load()
        self._state_read = False  # the constructor reads nothing: load_state() does, under the lock
        self._reported: dict[Path, tuple[int, str]] = {}  # bad files in key_dir, logged once each
        self.highest_issued = 0.0
        self.floor_source: dict[str, Any] = {"kind": FloorKind.MIN_VALID_TIME.value}
        self.trusted = TrustedIndex(root_keys, site)

    def load_state(self, *, repair: bool = True) -> None:
        """Blocking: read ``state.json`` (the floors). A damaged one is moved aside and the floors
        are rebuilt from the held index in :meth:`load`; with ``repair=False`` (a reader beside a
        running gateway, which owns the folder) it is only ignored, and nothing is written."""
        self._state_read = True
        path = self.dir / "state.json"
        try:
            state = _state_from_json(atomic.read_json(path, {}))
        except DamagedStateError as exc:
            state = {}
            if repair:
                moved = atomic.move_aside(path)
                action = "floors rebuilt from the newest signed index held (min_valid_time if none)"
                self.recovered.append(atomic.recovered(path, exc.problem, action, moved))
                self._rebuild_floors = True
        self.highest_issued = float(state.get("highest_issued", 0.0))
        source = state.get("floor_source")
        if isinstance(source, dict):
            self.floor_source = source
        elif self.highest_issued > self.min_valid_time:
            self.floor_source = {"kind": FloorKind.UNKNOWN.value}
        else:
            self.floor_source = {"kind": FloorKind.MIN_VALID_TIME.value}
        self.trusted.highest_version = int(state.get("highest_version", 0))

    def refresh_keys(self, *, at_start: bool = False) -> None:
        """Root keys = configured ones + PEM files dropped into ``key_dir`` (no restart needed).
        A private key there stops start-up (``at_start``: ConfigError naming the file); one dropped
        in while running is an error in the log (once per file version) and is never used."""
        keys = dict(self.configured_keys)
        if self.key_dir is not None and self.key_dir.is_dir():
            for path in sorted(self.key_dir.glob("*.pem")):
                try:
                    pem = path.read_bytes()
                    if at_start and holds_private_key(pem):
                        raise ConfigError(str(path), "trusted-keys", PRIVATE_KEY_ADVICE)
                    key = parse_public_key(pem, str(path))
                except (OSError, FormatError) as exc:
                    self._key_file_problem(path, exc)
                    continue
                keys[keyid(key)] = key
        self.trusted.root_keys = keys

    def _key_file_problem(self, path: Path, exc: Exception) -> None:
        """Log a bad file in ``key_dir`` once per version of it (keys are refreshed every poll)."""
        try:
            stamp = (path.stat().st_mtime_ns, str(exc))
        except OSError:
            stamp = (0, str(exc))
        if self._reported.get(path) != stamp:
            self._reported[path] = stamp
            log.error("ignoring trusted key file %s: %s", path, exc)

    def _ensure_state(self) -> None:
        """The floors are read before any is used or written (a folder's floors are never lowered
        by a state object that has not read them); the gateway reads them in :meth:`load`."""
        if not self._state_read:
            self.load_state()

    def metadata(self, name: str) -> bytes | None:
        """A held TUF metadata file by name (:mod:`gateway.trust.tuf_state`); the index holds none."""
        return None

    @property
    def floor(self) -> float:
        self._ensure_state()
        return max(self.min_valid_time, self.highest_issued)

    def clock(self, system_now: float) -> ClockReading:
        return judge_clock(system_now, self.floor)

    def now(self, system_now: float) -> tuple[float, bool]:
        """``clock(system_now)``'s ``(now, trusted)`` alone, for the hot path of a poll."""
        return trusted_now(system_now, self.floor)

    def advice(self, system_now: float) -> str | None:
        """One line on why the clock is not trusted and what to do; None when it is."""
        return floor_advice(self.clock(system_now), self.min_valid_time, self.max_future_skew_s)

    def source(self) -> dict[str, Any]:
        """Where the floor came from: the stored source, or min_valid_time when that is higher."""
        self._ensure_state()
        if self.min_valid_time >= self.highest_issued:
            return {"kind": FloorKind.MIN_VALID_TIME.value}
        return dict(self.floor_source)

    def load(self, system_now: float) -> SiteIndex | None:
        """Re-verify what we held before a restart; a held index that no longer verifies is dropped."""
        if not self._state_read:
            self.load_state()
        self.refresh_keys(at_start=True)
        now = self.clock(system_now).now
        keys_path, index_path = self.dir / "keys.json", self.dir / "index.json"
        if keys_path.exists():
            try:
                self.trusted.update_key_list(keys_path.read_bytes(), now)
            except RemoteDataError as exc:
                log.warning("held key list no longer verifies, ignoring it: %s", exc)
        advice = self.advice(system_now)
        if advice is not None:
            log.warning("clock not trusted: %s", advice)
        if not index_path.exists():
            return None
        try:
            # Not checked against the future-skew rule: it was accepted before, and the floor,
            # not this index, is what carries time forward.
            index = self.trusted.verify_index(index_path.read_bytes(), now)
        except RemoteDataError as exc:
            log.warning("held site index no longer verifies, ignoring it: %s", exc)
            index = None
        if index is not None:
            self.trusted.accept(index)
        if self._rebuild_floors:
            self._rebuild_floors = False
            self._rebuild(index, system_now)
        return index

    def _rebuild(self, index: SiteIndex | None, system_now: float) -> None:
        """After a damaged ``state.json``: the floors from the newest signed index held, through the
        same cap as any accepted index (:func:`raised_floor`); ``min_valid_time`` when none."""
        source: dict[str, Any] = {"kind": FloorKind.MIN_VALID_TIME.value}
        if index is not None:
            reading = self.clock(system_now)
            self.highest_issued, capped = raised_floor(
                0.0, index.issued, reading, self.max_future_skew_s, self.min_valid_time
            )
            if self.highest_issued > 0:
                source = {
                    "kind": FloorKind.INDEX.value,
                    "version": index.version,
                    "issued": format_time(index.issued or 0.0),
                    "capped": capped,
                    "clock_trusted": reading.trusted,
                    "rebuilt": True,
                }
        self.floor_source = source
        try:
            self._write_state(self.trusted.highest_version, self.highest_issued, source)
        except StorageError as exc:  # believed in memory; the next accepted index writes it again
            log.warning("cannot write the rebuilt trust state: %s", exc)

    def accept_key_list(self, raw: bytes, system_now: float) -> None:
        self.trusted.update_key_list(raw, self.clock(system_now).now)
        atomic.write_bytes(self.dir / "keys.json", raw)

    def verify(self, raw: bytes, system_now: float) -> SiteIndex:
        self._ensure_state()
        self.refresh_keys()
        reading = self.clock(system_now)
        return self.trusted.verify_index(
            raw, reading.now, clock=reading, max_future_skew_s=self.max_future_skew_s
        )

    def accept(self, index: SiteIndex, system_now: float) -> None:
        """Persist first, then believe: a crash in between leaves the old state whole."""
        self._ensure_state()
        reading = self.clock(system_now)
        highest_issued, capped = raised_floor(
            self.highest_issued, index.issued, reading, self.max_future_skew_s, self.min_valid_time
        )
        source = self.floor_source
        if highest_issued != self.highest_issued:
            source = {
                "kind": FloorKind.INDEX.value,
                "version": index.version,
                "issued": format_time(index.issued or 0.0),
                "capped": capped,
                "clock_trusted": reading.trusted,
            }
            if capped:
                log.warning(
                    "index version %d was issued %s, beyond the local time %s plus "
                    "trust.max_future_skew_s: the clock floor rises only to %s",
                    index.version,
                    format_time(index.issued or 0.0),
                    format_time(reference_time(reading, self.min_valid_time)),
                    format_time(highest_issued),
                )
        atomic.write_bytes(self.dir / self.HELD, index.raw)
        self._write_state(max(self.trusted.highest_version, index.version), highest_issued, source)
        self.highest_issued = highest_issued
        self.floor_source = source
        self.trusted.accept(index)

    def _write_state(self, highest_version: int, highest_issued: float, source: dict[str, Any]) -> None:
        atomic.write_json(
            self.dir / "state.json",
            {
                "highest_version": highest_version,
                "highest_issued": highest_issued,
                "floor_source": source,
            },
        )

    def reset_floor(self, system_now: float, *, who: str, why: str) -> dict[str, Any] | None:
        """Lower the clock floor to the system clock (to ``min_valid_time`` when the clock is before
        it), never raise it; audited before it takes effect. Only on a stopped gateway (the caller
        holds the data folder lock), so a running one cannot write its old floor back. Returns the
        audit record, or None when the floor is not above that and there is nothing to lower."""
        self._ensure_state()
        old_floor = self.floor
        target = system_now if system_now >= self.min_valid_time else 0.0
        highest_issued = min(self.highest_issued, target)
        if highest_issued == self.highest_issued:
            return None
        source = {
            "kind": FloorKind.RESET.value,
            "who": who,
            "why": why,
            "at": format_time(system_now),
            "previous": format_time(old_floor),
        }
        record = {
            "event": "reset-floor",
            "at": format_time(system_now),
            "who": who,
            "why": why,
            "floor_before": format_time(old_floor),
            "floor_after": format_time(max(self.min_valid_time, highest_issued)),
            "system_clock": format_time(system_now),
        }
        self._audit(record)
        self._write_state(self.trusted.highest_version, highest_issued, source)
        self.highest_issued = highest_issued
        self.floor_source = source
        return record

    def _audit(self, record: dict[str, Any]) -> None:
        path = self.dir / "audit.jsonl"
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            atomic.fsync_dir(self.dir)
        except OSError as exc:
            raise StorageError(
                f"cannot write the audit record {path}: {exc.strerror or exc}", path=str(path)
            ) from exc

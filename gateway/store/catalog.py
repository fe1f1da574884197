"""The store's catalog: which URL names which blob, in which order a model's versions were
published, when each blob was last served, and what the index in effect asks the store to keep.

The names (``model_id/version/file`` -> sha256 and length), the publication order (for the rollback
path) and the access times (for LRU) are persisted to ``catalog.json`` (atomically, at most every
:data:`ACCESS_FLUSH_S` unless forced) so a restart knows its blobs' names before the first index
poll. A damaged ``catalog.json`` is moved aside and the catalog starts empty: it is a cache, rebuilt
from the blobs on disk and the index in effect. What the index in effect says (the deployments
offered, the signed coordinator commands, the gates' rollback targets) is kept in memory only, for
the protection :mod:`gateway.store.evict` computes.

It does no hashing and knows nothing of which blobs are verified (:mod:`gateway.store.served`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway.core.errors import DamagedStateError, StorageError
from gateway.core.eviction import Offered, RollbackPin
from gateway.core.manifest import Deployment
from gateway.runtime import atomic
from gateway.runtime.stats import Stats
from gateway.store.lookup import Entry

log = logging.getLogger(__name__)

ACCESS_FLUSH_S = 60.0


class Catalog:
    def __init__(self, path: Path, stats: Stats) -> None:
        self.path = path
        self.stats = stats  # store.catalog_write_errors
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.history: dict[str, list[str]] = {}
        self.last_access: dict[str, float] = {}
        self.in_effect: set[str] = set()  # sha256 of artifacts of deployments in effect
        self.offered: list[Offered] = []  # the deployments in effect, as protection sees them
        self.commands: Mapping[str, str] = {}  # the index's signed coordinator commands
        self.rollback_pins: list[RollbackPin] = []  # the gates' rollback targets
        self.recovered: list[dict[str, Any]] = []  # a damaged catalog.json found at open (for /status)
        self._dirty = False
        self._last_flush = 0.0

    # -- the file ---------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read ``catalog.json``; a damaged one is moved aside and the catalog starts empty."""
        try:
            doc = await asyncio.to_thread(atomic.read_json, self.path, {})
            self._load(doc or {})
        except DamagedStateError as exc:
            # A cache: the blobs on disk are listed and hashed by the store, their names come back
            # with the index in effect (learn), and the access times start again from now.
            self.entries, self.history, self.last_access = {}, {}, {}
            moved = await asyncio.to_thread(atomic.move_aside, self.path)
            action = "rebuilt from the blobs on disk and the index in effect"
            self.recovered.append(atomic.recovered(self.path, exc.problem, action, moved))
            self._dirty = True

    def _load(self, doc: Any) -> None:
        try:
            entries = {}
            for e in doc.get("entries", []):
                entry = Entry(
                    str(e["model_id"]),
                    str(e["version"]),
                    str(e["filename"]),
                    str(e["sha256"]),
                    int(e["length"]),
                )
                entries[(entry.model_id, entry.version, entry.filename)] = entry
            history = {str(k): [str(x) for x in v] for k, v in doc.get("history", {}).items()}
            last_access = {str(k): float(v) for k, v in doc.get("last_access", {}).items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DamagedStateError(str(self.path), f"wrong schema ({exc!r:.80})") from exc
        self.entries, self.history, self.last_access = entries, history, last_access

    def changed(self) -> None:
        """Something the store holds changed: the next flush writes the catalog."""
        self._dirty = True

    async def flush(self, *, force: bool = False) -> None:
        now = time.time()
        if not self._dirty or (not force and now - self._last_flush < ACCESS_FLUSH_S):
            return
        self._dirty, self._last_flush = False, now
        try:
            await asyncio.to_thread(atomic.write_json, self.path, self.to_json())
        except StorageError as exc:
            # The blobs are on disk; the catalog only names them for a restart: a failed write
            # fails neither the publish or eviction that asked for it nor the mirror loop.
            self._dirty, self._last_flush = True, 0.0  # the next flush tries again at once
            self.stats.error("store.catalog_write_errors", str(exc))
            log.warning("%s; the catalog is kept in memory and written on the next flush", exc)

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [e.__dict__ for e in self.entries.values()],
            "history": self.history,
            "last_access": self.last_access,
        }

    # -- names ------------------------------------------------------------------------------------

    def learn(
        self, deployments: Iterable[Deployment], now: float, commands: Mapping[str, str] | None = None
    ) -> None:
        """Record the URL names and publication order of the deployments in effect."""
        self.in_effect = set()
        self.offered = []
        if commands is not None:
            self.commands = dict(commands)
        for d in deployments:
            self.entries[(d.model_id, d.version, d.filename)] = Entry(
                d.model_id, d.version, d.filename, d.sha256, d.length
            )
            versions = self.history.setdefault(d.model_id, [])
            if d.version not in versions:
                versions.append(d.version)
            self.in_effect.add(d.sha256)
            self.offered.append(
                Offered(
                    d.model_id,
                    d.version,
                    d.sha256,
                    d.target_cohort,
                    (d.min_firmware, d.max_firmware),
                    d.rollout_percentage,
                    d.start_time,
                )
            )
        self._dirty = True

    def pin_rollback_targets(self, baselines: Mapping[str, Deployment], halted: Iterable[str] = ()) -> None:
        """The gates' rollback targets (candidate ``model@version`` -> its baseline manifest), and
        which candidates' gates halted; those of candidates no longer in effect are let go."""
        live = {f"{o.model_id}@{o.version}" for o in self.offered}
        stopped = set(halted)
        self.rollback_pins = [
            RollbackPin(base.model_id, key.rpartition("@")[2], base.sha256, halted=key in stopped)
            for key, base in baselines.items()
            if key in live
        ]

    def hold(self, commands: Mapping[str, str]) -> None:
        """The signed coordinator commands of the index in effect (a held version is not offered)."""
        self.commands = dict(commands)

    def entry(self, model_id: str, version: str, filename: str) -> Entry | None:
        return self.entries.get((model_id, version, filename))

    def named(self, model_id: str, version: str, filename: str) -> tuple[Entry | None, bool]:
        """The entry a URL's file names, and whether the URL asks for its ``.sig``."""
        is_sig = filename.endswith(".sig")
        return self.entries.get((model_id, version, filename[:-4] if is_sig else filename)), is_sig

    def touch(self, sha256: str, now: float) -> None:
        """The blob was served (or published) at ``now``: it is the most recently used."""
        self.last_access[sha256] = now
        self._dirty = True

"""The artifact store the rest of the gateway talks to: URL names -> verified blobs, in memory.

It keeps, in memory, which blobs are verified (re-hashed since this start), which URL
(``model_id/version/file``) names which blob, the order in which a model's versions were published
(for the rollback path) and when each blob was last served (for LRU). ``lookup`` answers from memory
only, so the download handler never blocks; disk work runs in worker threads. The catalog is
persisted to ``catalog.json`` (atomically) so a restart knows its blobs' names before the first index
poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import atomic
from gateway.http.lookup import Pending, Verified
from gateway.manifest import Deployment
from gateway.store.blobs import BlobInfo, BlobStore
from gateway.store.eviction import BlobUse, choose_evictions, previous_stable

log = logging.getLogger(__name__)

ACCESS_FLUSH_S = 60.0


@dataclass(frozen=True)
class Entry:
    model_id: str
    version: str
    filename: str
    sha256: str
    length: int


class ArtifactStore:
    def __init__(self, data_dir: Path, *, quota_bytes: int = 0) -> None:
        self.blobs = BlobStore(data_dir)
        self.quota_bytes = quota_bytes
        self._catalog_path = data_dir / "catalog.json"
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.history: dict[str, list[str]] = {}
        self.last_access: dict[str, float] = {}
        self.verified: dict[str, BlobInfo] = {}
        self.in_effect: set[str] = set()  # sha256 of artifacts of deployments in effect
        self.pinned: set[str] = set()  # sha256 pinned by the gates (previous stable on a halt)
        self.pending_hint: Callable[[str], int] = lambda sha: 5
        self.on_miss: Callable[[str], None] = lambda sha: None
        self.on_verified: Callable[[str], None] = lambda sha: None  # long polls wake on it
        self._dirty = False
        self._last_flush = 0.0

    # -- start-up ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the catalog and re-verify every blob before it may be served."""
        doc = await asyncio.to_thread(atomic.read_json, self._catalog_path, {})
        for e in (doc or {}).get("entries", []):
            entry = Entry(e["model_id"], e["version"], e["filename"], e["sha256"], int(e["length"]))
            self.entries[(entry.model_id, entry.version, entry.filename)] = entry
        self.history = {k: list(v) for k, v in (doc or {}).get("history", {}).items()}
        self.last_access = {k: float(v) for k, v in (doc or {}).get("last_access", {}).items()}
        for sha in await asyncio.to_thread(self.blobs.list_blobs):
            info = await asyncio.to_thread(self.blobs.check, sha)
            if info is not None:
                self.verified[sha] = info

    # -- names ------------------------------------------------------------------------------------

    def learn(self, deployments: Iterable[Deployment], now: float) -> None:
        """Record the URL names and publication order of the deployments in effect."""
        self.in_effect = set()
        for d in deployments:
            self.entries[(d.model_id, d.version, d.filename)] = Entry(
                d.model_id, d.version, d.filename, d.sha256, d.length
            )
            versions = self.history.setdefault(d.model_id, [])
            if d.version not in versions:
                versions.append(d.version)
            self.in_effect.add(d.sha256)
        self._dirty = True

    def entry(self, model_id: str, version: str, filename: str) -> Entry | None:
        return self.entries.get((model_id, version, filename))

    def protected(self) -> set[str]:
        """Blobs that must never be evicted: in effect, pinned, and each model's previous stable."""
        keep = set(self.in_effect) | self.pinned
        for model_id, versions in self.history.items():
            live = {
                e.version
                for e in self.entries.values()
                if e.model_id == model_id and e.sha256 in self.in_effect
            }
            for version in previous_stable(versions, live):
                keep.update(
                    e.sha256 for e in self.entries.values() if e.model_id == model_id and e.version == version
                )
        return keep

    def previous_stable_entry(self, model_id: str, version: str) -> Entry | None:
        """The version published before ``version``, if it is still verified here."""
        versions = self.history.get(model_id, [])
        if version not in versions:
            return None
        for earlier in reversed(versions[: versions.index(version)]):
            for e in self.entries.values():
                if e.model_id == model_id and e.version == earlier and e.sha256 in self.verified:
                    return e
        return None

    # -- the lookup the download handler uses (memory only) -----------------------------------------

    def lookup(self, model_id: str, version: str, filename: str) -> Verified | Pending | None:
        is_sig = filename.endswith(".sig")
        entry = self.entries.get((model_id, version, filename[:-4] if is_sig else filename))
        if entry is None:
            return None
        info = self.verified.get(entry.sha256)
        if info is None:
            if entry.sha256 not in self.in_effect:
                return None
            self.on_miss(entry.sha256)
            return Pending(self.pending_hint(entry.sha256))
        if not is_sig:
            self.last_access[entry.sha256] = time.time()
            self._dirty = True
            return Verified(self.blobs.blob_path(info.sha256), info.size, info.sha256, info.mtime)
        return Verified(
            self.blobs.sig_path(info.sha256),
            info.sig_size,
            info.sig_sha256,
            info.mtime,
            "application/octet-stream",
        )

    def is_verified(self, sha256: str) -> bool:
        return sha256 in self.verified

    # -- changes ----------------------------------------------------------------------------------

    async def publish(self, sha256: str, signature: bytes) -> BlobInfo:
        info = await asyncio.to_thread(self.blobs.publish, sha256, signature)
        self.verified[sha256] = info
        self.last_access[sha256] = time.time()
        self._dirty = True
        await self.flush(force=True)
        self.on_verified(sha256)
        return info

    async def make_room(self, incoming_bytes: int) -> bool:
        """Evict LRU blobs (never protected ones) so ``incoming_bytes`` fits the quota."""
        uses = [BlobUse(sha, i.size, self.last_access.get(sha, 0.0)) for sha, i in self.verified.items()]
        choice = choose_evictions(
            uses, self.protected(), quota_bytes=self.quota_bytes, incoming_bytes=incoming_bytes
        )
        for sha in choice.evict:
            log.info("evicting blob %s (least recently used, not protected)", sha)
            self.verified.pop(sha, None)
            await asyncio.to_thread(self.blobs.remove, sha)
        if choice.evict:
            self._dirty = True
            await self.flush(force=True)
        return choice.fits

    async def prune_unprotected(self) -> list[str]:
        """Remove every verified blob that no deployment in effect or rollback path needs."""
        keep = self.protected()
        removed = [sha for sha in self.verified if sha not in keep]
        for sha in removed:
            self.verified.pop(sha, None)
            await asyncio.to_thread(self.blobs.remove, sha)
        if removed:
            self._dirty = True
            await self.flush(force=True)
        return removed

    async def recheck(self, sha256: str) -> bool:
        """Re-hash one blob (``cache verify``); drops it when corrupt."""
        info = await asyncio.to_thread(self.blobs.check, sha256)
        if info is None:
            self.verified.pop(sha256, None)
            return False
        self.verified[sha256] = info
        return True

    async def flush(self, *, force: bool = False) -> None:
        now = time.time()
        if not self._dirty or (not force and now - self._last_flush < ACCESS_FLUSH_S):
            return
        self._dirty = False
        self._last_flush = now
        await asyncio.to_thread(atomic.write_json, self._catalog_path, self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [e.__dict__ for e in self.entries.values()],
            "history": self.history,
            "last_access": self.last_access,
        }

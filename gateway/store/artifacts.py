"""The artifact store the rest of the gateway talks to: URL names -> verified blobs, in memory.

It keeps, in memory, which blobs are verified (re-hashed since this start), which URL
(``model_id/version/file``) names which blob, the order in which a model's versions were published
(for the rollback path) and when each blob was last served (for LRU). ``lookup`` answers from memory
only, so the download handler never blocks; disk work runs in worker threads. The catalog is
persisted to ``catalog.json`` (atomically) so a restart knows its blobs' names before the first index
poll.

Blobs changed under the gateway:

* a blob the download handler finds missing, short, no longer a regular file or written since it
  was verified (its ctime moved) is reported with :meth:`ArtifactStore.broken`: it leaves the
  verified set at once (devices get 503 with ``Retry-After``), is hashed again off the loop, and is
  either taken back or quarantined and fetched again (:meth:`StoreListener.on_miss`, which the mirror
  handles);
* the scrub (:meth:`ArtifactStore.scrub_pass`) re-hashes every verified blob at a bounded rate, so
  bit rot the ctime cannot show is found too. A mismatch leaves the verified set (never served
  again), is moved to ``quarantine/`` and fetched again. A download already streaming when the
  scrub finds it is not cut: it finishes with what it started (the device checks the sha256).

What may be evicted is decided by :mod:`gateway.core.eviction` (pure); this class feeds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.core.errors import DamagedStateError, StorageError
from gateway.core.eviction import (
    BlobUse,
    Named,
    Offered,
    RollbackPin,
    choose_evictions,
    is_held,
    protected,
)
from gateway.core.manifest import Deployment
from gateway.runtime import atomic
from gateway.runtime.stats import Stats
from gateway.runtime.tasks import TaskGroup
from gateway.store.blobs import QUARANTINE_MAX_FILES, BlobInfo, BlobStore
from gateway.store.events import StoreListener, Unheard
from gateway.store.fill import Fills
from gateway.store.hashing import Hashed, Inode, ScrubReport, hash_file
from gateway.store.lookup import Entry, Pending, Streaming, Verified

log = logging.getLogger(__name__)

ACCESS_FLUSH_S = 60.0


class ArtifactStore:
    def __init__(
        self,
        data_dir: Path,
        *,
        quota_bytes: int = 0,
        running: Callable[[], Iterable[tuple[str | None, str]]] = lambda: (),
        listener: StoreListener | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.blobs = BlobStore(data_dir)
        self.stats = stats if stats is not None else Stats()  # store.evictions, store.evicted_bytes
        self.quota_bytes = quota_bytes
        self._catalog_path = data_dir / "catalog.json"
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.history: dict[str, list[str]] = {}
        self.last_access: dict[str, float] = {}
        self.verified: dict[str, BlobInfo] = {}
        self.in_effect: set[str] = set()  # sha256 of artifacts of deployments in effect
        self.offered: list[Offered] = []  # the deployments in effect, as protection sees them
        self.commands: Mapping[str, str] = {}  # the index's signed coordinator commands
        self.rollback_pins: list[RollbackPin] = []  # the gates' rollback targets
        self.running = running  # (model_id, version) devices report running
        self.listener: StoreListener = listener if listener is not None else Unheard()
        self.scrub = ScrubReport()
        self.fills = Fills()  # partials arriving in verified chunks (gateway.store.fill)
        self.quarantined: list[str] = []  # this run's quarantined files (the newest few), for status
        self._checking: set[str] = set()  # blobs reported broken, being hashed again
        self.recovered: list[dict[str, Any]] = []  # a damaged catalog.json found at open (for /status)
        self._tasks = TaskGroup()
        self._dirty = False
        self._last_flush = 0.0

    # -- start-up ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the catalog and re-verify every blob before it may be served."""
        try:
            doc = await asyncio.to_thread(atomic.read_json, self._catalog_path, {})
            self._load_catalog(doc or {})
        except DamagedStateError as exc:
            # A cache: the blobs on disk are listed and hashed below, their names come back with the
            # index in effect (learn), and the access times start again from now.
            self.entries, self.history, self.last_access = {}, {}, {}
            moved = await asyncio.to_thread(atomic.move_aside, self._catalog_path)
            action = "rebuilt from the blobs on disk and the index in effect"
            self.recovered.append(atomic.recovered(self._catalog_path, exc.problem, action, moved))
            self._dirty = True
        for sha in await asyncio.to_thread(self.blobs.open):  # makes the folders, lists the blobs
            info = await asyncio.to_thread(self.blobs.check, sha)
            if info is not None:
                self.verified[sha] = info

    def _load_catalog(self, doc: Any) -> None:
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
            raise DamagedStateError(str(self._catalog_path), f"wrong schema ({exc!r:.80})") from exc
        self.entries, self.history, self.last_access = entries, history, last_access

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

    def protected(self, now: float | None = None) -> set[str]:
        """Blobs that must not be evicted (see :mod:`gateway.core.eviction`)."""
        now = time.time() if now is None else now
        offered = [
            replace(o, held=True) if is_held(self.commands, o.model_id, o.version) else o
            for o in self.offered
        ]
        return protected(
            deployments=offered,
            running=[(m, v) for m, v in self.running() if v],
            pins=self.rollback_pins,
            names=[Named(e.model_id, e.version, e.sha256) for e in self.entries.values()],
            held=self.verified.keys(),
            now=now,
        )

    def lookup(self, model_id: str, version: str, filename: str) -> Verified | Streaming | Pending | None:
        is_sig = filename.endswith(".sig")
        entry = self.entries.get((model_id, version, filename[:-4] if is_sig else filename))
        if entry is None:
            return None
        info = self.verified.get(entry.sha256)
        if info is None:
            if entry.sha256 not in self.in_effect:
                return None
            if entry.sha256 not in self._checking:
                self.listener.on_miss(entry.sha256)
            fill = None if is_sig else self.fills.get(entry.sha256)
            hint = self.listener.retry_after_s(entry.sha256)
            return Pending(hint) if fill is None else Streaming(fill, hint)
        if not is_sig:
            self.last_access[entry.sha256] = time.time()
            self._dirty = True
            return Verified(
                self.blobs.blob_path(info.sha256), info.size, info.sha256, info.mtime, ctime_ns=info.ctime_ns
            )
        return Verified(
            self.blobs.sig_path(info.sha256),
            info.sig_size,
            info.sig_sha256,
            info.mtime,
            "application/octet-stream",
        )

    def is_verified(self, sha256: str) -> bool:
        return sha256 in self.verified

    def broken(self, model_id: str, version: str, filename: str) -> int:
        """The download handler found this URL's verified blob missing, short, or written since it
        was verified: stop serving it, hash it again off the loop, and take it back or quarantine
        and re-fetch it. Returns the ``Retry-After`` for the device meanwhile."""
        is_sig = filename.endswith(".sig")
        entry = self.entries.get((model_id, version, filename[:-4] if is_sig else filename))
        if entry is None:
            return 30
        sha = entry.sha256
        if self.verified.pop(sha, None) is not None:
            log.warning("blob %s is missing, short or changed on disk: no longer served, checking it", sha)
            self._dirty = True
            self._checking.add(sha)
            self._tasks.spawn(self._check_again(sha), name=f"recheck {sha[:12]}")
        return self.listener.retry_after_s(sha)

    async def _check_again(self, sha: str) -> None:
        try:
            result, inode, _ = await hash_file(self.blobs.blob_path(sha), sha, rate_bytes_per_s=0)
            if result is Hashed.GOOD:
                info = await asyncio.to_thread(self.blobs.info, sha)
                if info is not None and inode is not None and info.ctime_ns == inode.ctime_ns:
                    self.verified.setdefault(sha, info)  # a re-fetch may have published it meanwhile
                    log.info("blob %s hashed again and still good: serving it again", sha)
                    self.listener.on_verified(sha)
                    return
            await self._set_aside(sha, result, inode)
        finally:
            self._checking.discard(sha)
        if sha not in self.verified:
            self.listener.on_miss(sha)  # the mirror fetches it again while it is in effect

    async def _set_aside(self, sha: str, result: Hashed, inode: Inode | None) -> None:
        """Quarantine a mismatching blob; remove what is left of a missing one."""
        if result is Hashed.MISMATCH:
            where = await asyncio.to_thread(
                self.blobs.quarantine, sha, inode=inode.number if inode else None, now=time.time()
            )
            log.error("blob %s does not match its sha256: quarantined as %s, fetching it again", sha, where)
            if where is not None:
                self.quarantined = [*self.quarantined, str(where)][-QUARANTINE_MAX_FILES:]
        elif sha not in self.verified:
            await asyncio.to_thread(self.blobs.remove, sha)

    # -- the scrub --------------------------------------------------------------------------------

    async def scrub_pass(self, rate_bytes_per_s: float) -> ScrubReport:
        """Re-hash every verified blob once, at most ``rate_bytes_per_s``; quarantine and re-fetch
        any that no longer matches. The blob stays served while it is hashed (it is presumed good)."""
        report = ScrubReport(
            started_at=time.time(), passes=self.scrub.passes, total_mismatches=self.scrub.total_mismatches
        )
        for sha in sorted(self.verified):
            before = self.verified.get(sha)
            if before is None or sha in self._checking:
                continue  # evicted, or already being checked, since the pass began
            result, inode, n = await hash_file(
                self.blobs.blob_path(sha), sha, rate_bytes_per_s=rate_bytes_per_s
            )
            report.blobs += 1
            report.bytes += n
            if result is Hashed.GOOD or self.verified.get(sha) is not before:
                continue  # good, or evicted or published again while it was hashed
            self.verified.pop(sha, None)
            self._dirty = True
            if result is Hashed.MISMATCH:
                report.mismatches.append(sha)
                report.total_mismatches += 1
            else:
                report.missing.append(sha)
                log.error("blob %s is gone from disk: fetching it again", sha)
            await self._set_aside(sha, result, inode)
            self.listener.on_miss(sha)
        report.finished_at = time.time()
        report.passes += 1
        self.scrub = report
        if report.mismatches or report.missing:
            await self.flush(force=True)
        return report

    async def scrub_forever(self, rate_bytes_per_s: float, interval_s: float) -> None:
        """A pass every ``interval_s`` (start to start; a slow pass starts the next one at once)."""
        wait = interval_s
        while True:
            await asyncio.sleep(wait)
            begun = time.monotonic()
            try:
                report = await self.scrub_pass(rate_bytes_per_s)
                log.info("scrub: %s", report.words())
            except Exception:  # a disk error in one pass must not end the scrub for good
                log.exception("scrub pass failed")
            wait = max(0.0, interval_s - (time.monotonic() - begun))

    async def close(self) -> None:
        await self._tasks.close()

    # -- changes ----------------------------------------------------------------------------------

    async def publish(self, sha256: str, signature: bytes) -> BlobInfo:
        info = await asyncio.to_thread(self.blobs.publish, sha256, signature)
        self.verified[sha256] = info
        self.fills.finish(sha256)
        self.last_access[sha256] = time.time()
        self._dirty = True
        await self.flush(force=True)
        self.listener.on_verified(sha256)
        return info

    async def make_room(self, incoming_bytes: int) -> bool:
        """Evict LRU blobs (never protected ones) so ``incoming_bytes`` fits the quota."""
        uses = [BlobUse(sha, i.size, self.last_access.get(sha, 0.0)) for sha, i in self.verified.items()]
        choice = choose_evictions(
            uses, self.protected(), quota_bytes=self.quota_bytes, incoming_bytes=incoming_bytes
        )
        for sha in choice.evict:
            log.info("evicting blob %s (least recently used, not protected)", sha)
            gone = self.verified.pop(sha, None)
            self.stats.inc("store.evictions")
            self.stats.inc("store.evicted_bytes", gone.size if gone else 0)
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
        """Re-hash one blob (``cache verify``); drops it when corrupt (it is fetched again)."""
        info = await asyncio.to_thread(self.blobs.check, sha256)
        if info is None:
            self.verified.pop(sha256, None)
            self.listener.on_miss(sha256)
            return False
        self.verified[sha256] = info
        return True

    async def flush(self, *, force: bool = False) -> None:
        now = time.time()
        if not self._dirty or (not force and now - self._last_flush < ACCESS_FLUSH_S):
            return
        self._dirty, self._last_flush = False, now
        try:
            await asyncio.to_thread(atomic.write_json, self._catalog_path, self.to_json())
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

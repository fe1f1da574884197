"""The mirror: poll the signed index, believe only what verifies, prefetch what it names.

One conditional GET per interval (ETag / Last-Modified), however many devices poll us: the device
API reads the index this module holds and never causes an upstream request of its own. The site
index (``sites/<site>/index.json``) is tried first, then the fleet index (``index.json``). A
rejected index is logged with its reason and counted, and the last good one keeps serving.

The validators of a conditional request (ETag, Last-Modified) are committed only together with
what they describe: after the key list or index was verified *and* saved. Any failure in between
(a refused index, a full or read-only disk, a bug) leaves them as they were, so the next poll
fetches the file again instead of hearing "not modified" about something we never took in.

Prefetch: every artifact of a deployment in effect (not yet past its ``end_time``) is fetched
before any device asks for it, by :class:`gateway.mirror.fetch.Fetcher`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.core.errors import NotModified, RemoteDataError, StorageError, TransportError
from gateway.core.manifest import Deployment
from gateway.core.pacing import backoff_s, jittered, retry_after_s
from gateway.core.progress import Estimate
from gateway.core.settings import Settings
from gateway.mirror import tuf_poll
from gateway.mirror.children import ChildSites
from gateway.mirror.fetch import Fetcher
from gateway.mirror.pace import Pacer
from gateway.mirror.upstream import Upstream
from gateway.runtime.stats import Stats
from gateway.store.artifacts import ArtifactStore
from gateway.trust.index import MAX_INDEX_BYTES, SiteIndex
from gateway.trust.state import TrustState
from gateway.trust.tuf_state import TufTrustState

log = logging.getLogger(__name__)


@dataclass
class _Validators:
    etag: str | None = None
    last_modified: str | None = None


def in_effect(index: SiteIndex | None, now: float) -> list[Deployment]:
    """Deployments whose window has not ended (future ones included: fetch them early)."""
    if index is None:
        return []
    return [d for d in index.deployments if d.end_time is None or d.end_time > now]


def by_sha(deployments: list[Deployment]) -> dict[str, Deployment]:
    """One deployment per artifact, the first the index lists: whose URLs the transfer uses."""
    out: dict[str, Deployment] = {}
    for d in deployments:
        out.setdefault(d.sha256, d)
    return out


IndexListener = Callable[[SiteIndex], None]
"""Called with each newly accepted index (the site loop judges it, the store holds its commands)."""


class Mirror:
    """Its event, declared and given at construction: ``on_index`` for each accepted index. It
    answers the store's questions about transfers (:meth:`retry_after_s`, :meth:`on_miss`)."""

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        trust: TrustState,
        store: ArtifactStore,
        stats: Stats,
        *,
        on_index: Sequence[IndexListener] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.trust = trust
        self.store = store
        self.stats = stats
        self.clock = clock
        self.fetcher = Fetcher(
            store,
            upstream,
            trust.trusted.signing_keys,
            settings.mirror,
            stats,
            min_free_bytes=settings.store.min_free_bytes,
            pace=Pacer(settings.mirror, lambda: trust.clock(clock())),  # schedules judge trusted time
        )
        self.index: SiteIndex | None = None
        self.children = ChildSites(settings.mirror.child_sites, trust, trust.dir / "sites", stats)
        self.changed = asyncio.Event()  # set on every newly accepted index
        self.listeners = tuple(on_index)
        self._validators: dict[str, _Validators] = {}
        self._index_rel = f"sites/{settings.site}/index.json"
        self.last_poll_ok: float | None = None
        self.last_error: str | None = None
        self.no_index: str | None = None  # what the upstream answered when it has no index for us
        self._told = 0  # devices told to come back later
        self._polling = asyncio.Lock()  # one round at a time: an import polls too (gateway.bundle)

    async def open(self) -> None:
        """Re-verify the index held before a restart, and resume its transfers."""
        self.index = await asyncio.to_thread(self.trust.load, self.clock())
        await asyncio.to_thread(self.children.load, self.clock())
        self._learn()
        if self.index is not None:
            log.info("holding site index version %d from before the restart", self.index.version)
            self._apply(self.index)

    # -- the store's listener (gateway.store.events.StoreListener) ------------------------------

    def retry_after_s(self, sha256: str) -> int:
        """When a device should come back for an artifact in transit (one without a chunk list, or
        one the store cannot take): after the transfer's expected finish, spread device by device."""
        self._told += 1  # slots the devices' returns after the expected finish (core.pacing)
        return retry_after_s(self.fetcher.progress.get(sha256), self._told)

    def on_miss(self, sha256: str) -> None:
        """A device asked for an artifact still in transit: make sure its transfer is running."""
        d = by_sha(self._live(self.index, self.clock())).get(sha256)
        if d is not None:
            self.fetcher.ensure(d)

    def progress_bytes(self, sha256: str) -> int | None:
        """Bytes transferred so far of an artifact in transit (None: not in transit)."""
        progress = self.fetcher.progress.get(sha256)
        return progress.done if progress else None

    def progress(self, sha256: str) -> Estimate | None:
        """Done, total, rate and time left of an artifact in transit (None: not in transit)."""
        p = self.fetcher.progress.get(sha256)
        return Estimate(p.done, p.total, p.rate_bps) if p else None

    def prefetch(self) -> None:
        """Make sure every artifact in effect is verified here or on its way (a blob found corrupt
        and removed, or a transfer that gave up, is fetched again on the next poll)."""
        for d in by_sha(self._live(self.index, self.trust.clock(self.clock()).now)).values():
            if not self.store.is_verified(d.sha256):
                self.fetcher.ensure(d)

    def _live(self, index: SiteIndex | None, now: float) -> list[Deployment]:
        """This site's deployments in effect, then those of the child sites held for tiers."""
        children = [d for d in self.children.deployments() if d.end_time is None or d.end_time > now]
        return in_effect(index, now) + children

    def _apply(self, index: SiteIndex) -> None:
        self._learn(index)
        for listener in self.listeners:
            try:
                listener(index)
            except Exception:
                log.exception("index listener failed")

    def _learn(self, index: SiteIndex | None = None) -> None:
        """The store learns, and the fetcher fetches, what this site and its child sites name."""
        now = self.trust.clock(self.clock()).now
        live = self._live(index or self.index, now)
        self.store.catalog.learn(live, now)
        wanted = by_sha(live)
        self.fetcher.cancel_except(set(wanted))
        # The newest index decides where an artifact lives: a transfer still on an older URL for
        # the same sha256 is restarted on the new one (see Fetcher.ensure).
        for d in wanted.values():
            self.fetcher.ensure(d)

    async def _get(self, rel: str) -> tuple[bytes, _Validators] | None:
        """Conditional GET; None when unchanged. The new validators are returned, not stored:
        the caller commits them (:meth:`_commit`) once it has taken in the body."""
        v = self._validators.get(rel, _Validators())
        try:
            fetched = await self.upstream.get(
                rel, etag=v.etag, last_modified=v.last_modified, max_bytes=MAX_INDEX_BYTES
            )
        except NotModified:
            return None
        return fetched.body, _Validators(fetched.etag, fetched.last_modified)

    def _commit(self, rel: str, validators: _Validators) -> None:
        self._validators[rel] = validators

    async def poll_once(self) -> bool:
        """One round: key list, then index. Returns True when a new index was accepted."""
        async with self._polling:
            return await self._poll_round()

    async def _poll_round(self) -> bool:
        self.stats.inc("mirror.index_polls")
        if isinstance(self.trust, TufTrustState):
            return await self._poll_tuf(self.trust)
        try:
            got = await self._get("keys.json")
            if got is not None:
                await asyncio.to_thread(self.trust.accept_key_list, got[0], self.clock())
                self._commit("keys.json", got[1])
        except TransportError as exc:
            if exc.status != 404:
                raise
        except RemoteDataError as exc:
            self.stats.error("mirror.rejected_key_lists", str(exc))
            log.error("rejected key list: %s", exc)
        if self.children.sites and await self.children.poll(self._get, self._commit, self.clock()):
            self._learn()
        rel = self._index_rel
        try:
            got = await self._get(rel)
        except TransportError as exc:
            if exc.status != 404:
                raise
            rel = "index.json"
            try:
                got = await self._get(rel)
            except TransportError as again:
                if again.status != 404:
                    raise
                self._no_index([exc, again])
                return False
        self.no_index = None
        if got is None:
            self.stats.inc("mirror.index_not_modified")
            return False
        raw, validators = got
        try:
            index = await asyncio.to_thread(self.trust.verify, raw, self.clock())
        except RemoteDataError as exc:
            # Validators not committed: the next poll fetches again rather than 304 on the bad file.
            self.stats.error("mirror.rejected_indexes", str(exc))
            log.error("rejected site index: %s; the last good state keeps serving", exc)
            return False
        if self.index is not None and index.version == self.index.version:
            self._commit(rel, validators)
            return False
        return await self._take(index, lambda: self._commit(rel, validators))

    async def _poll_tuf(self, trust: TufTrustState) -> bool:
        """One TUF refresh (:mod:`gateway.mirror.tuf_poll`); a refused set keeps the last good one."""
        try:
            s = await tuf_poll.refresh(
                self.upstream,
                trust.folder,
                trust.trusted_root,
                trust.held,
                trust.clock(self.clock()).now,
                trust.trusted.site,
                trust.last_set,
            )
            index = await asyncio.to_thread(trust.verify_set, s, self.clock()) if s.changed else None
        except TransportError as exc:
            if exc.status != 404:
                raise
            self._no_index([exc])  # nothing published yet (or no upstream: bundles only)
            return False
        except RemoteDataError as exc:
            self.stats.error("mirror.rejected_indexes", str(exc))
            log.error("rejected TUF metadata: %s; the last good state keeps serving", exc)
            return False
        self.no_index = None
        if index is None:
            self.stats.inc("mirror.index_not_modified")
            return False
        return await self._take(index, lambda: None)

    async def _take(self, index: SiteIndex, commit: Callable[[], None]) -> bool:
        """Believe a verified index: persist it, then tell the listeners."""
        for what, why in index.rejected:
            self.stats.error("mirror.rejected_deployments", f"{what}: {why}")
            log.error("rejected %s in index version %d: %s", what, index.version, why)
        # A StorageError here propagates with the validators uncommitted (see the module docstring).
        await asyncio.to_thread(self.trust.accept, index, self.clock())
        commit()
        self.index = index
        self.stats.inc("mirror.indexes_accepted")
        log.info("accepted site index version %d (%d deployments)", index.version, len(index.deployments))
        self._apply(index)
        self.changed.set()
        self.changed = asyncio.Event()
        return True

    def _no_index(self, answers: Sequence[TransportError]) -> None:
        """Normal on a fresh local registry, and what a wrong site name looks like: say which URLs
        were tried and what they answered, once (again if that changes), and keep polling."""
        tried = ", ".join(f"{a.url} ({a.status} not found)" for a in answers if a.url)
        message = (
            f"no index published upstream for site {self.settings.site!r} yet: tried {tried}; "
            "polling (check site and mirror.upstream if one was published)"
            if tried
            else "no upstream (mirror.upstream is empty): indexes come only from bundles"
        )
        if message != self.no_index:
            log.info("%s", message)
        self.no_index = message

    async def run(self) -> None:
        """Poll forever: jittered interval when healthy, backoff with jitter when the uplink fails."""
        failures = 0
        while True:
            try:
                await self.poll_once()
                self.prefetch()
                self.last_poll_ok = self.clock()
                self.last_error = None
                failures = 0
                delay = jittered(
                    self.settings.mirror.poll_interval_s, self.settings.mirror.poll_jitter, random.random()
                )
            except Exception as exc:  # the loop outlives any one failure (uplink down, disk, or a bug)
                if not isinstance(exc, TransportError | StorageError):
                    log.exception("index poll failed unexpectedly")
                self.stats.error("mirror.index_poll_errors", str(exc))
                self.last_error = str(exc)
                delay = min(
                    self.settings.mirror.poll_interval_s,
                    backoff_s(
                        failures,
                        initial_s=self.settings.mirror.retry_initial_s,
                        max_s=self.settings.mirror.retry_max_s,
                        rand=random.random(),
                    ),
                )
                failures += 1
                log.warning("index poll failed (%s); next try in %.1fs", exc, delay)
            try:
                await self.store.catalog.flush()  # a failed catalog write is counted there and retried
            except Exception:  # the loop outlives a bug in it too
                log.exception("catalog flush failed unexpectedly")
            await asyncio.sleep(delay)

    async def close(self) -> None:
        await self.fetcher.close()
        await self.upstream.close()

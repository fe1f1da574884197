"""What the store keeps, and room made under the quota: the store's side of
:mod:`gateway.core.eviction`.

A blob is protected while a device can still be offered it or fall back to it (what the index in
effect offers, what devices report running, the gates' rollback targets: the rules are the core's);
the rest may go, least recently served first, when an incoming artifact would take the store past
``store.quota_bytes`` (:meth:`Evictor.make_room`), or all at once (:meth:`Evictor.prune_unprotected`,
``cache prune``). This class feeds the core's choice from the catalog and the served set and
carries it out on disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from gateway.core.eviction import BlobUse, Named, choose_evictions, is_held, protected
from gateway.runtime.stats import Stats
from gateway.store.catalog import Catalog
from gateway.store.served import Served

log = logging.getLogger(__name__)


class Evictor:
    def __init__(
        self,
        served: Served,
        catalog: Catalog,
        *,
        quota_bytes: int,
        running: Callable[[], Iterable[tuple[str | None, str]]],
        stats: Stats,
    ) -> None:
        self.served = served
        self.catalog = catalog
        self.quota_bytes = quota_bytes
        self.running = running  # (model_id, version) devices report running
        self.stats = stats  # store.evictions, store.evicted_bytes

    def protected(self, now: float | None = None) -> set[str]:
        """Blobs that must not be evicted (see :mod:`gateway.core.eviction`)."""
        now = time.time() if now is None else now
        cat = self.catalog
        offered = [
            replace(o, held=True) if is_held(cat.commands, o.model_id, o.version) else o for o in cat.offered
        ]
        return protected(
            deployments=offered,
            running=[(m, v) for m, v in self.running() if v],
            pins=cat.rollback_pins,
            names=[Named(e.model_id, e.version, e.sha256) for e in cat.entries.values()],
            held=self.served.verified.keys(),
            now=now,
        )

    async def make_room(self, incoming_bytes: int) -> bool:
        """Evict LRU blobs (never protected ones) so ``incoming_bytes`` fits the quota."""
        last_access = self.catalog.last_access
        uses = [BlobUse(sha, i.size, last_access.get(sha, 0.0)) for sha, i in self.served.verified.items()]
        choice = choose_evictions(
            uses, self.protected(), quota_bytes=self.quota_bytes, incoming_bytes=incoming_bytes
        )
        for sha in choice.evict:
            log.info("evicting blob %s (least recently used, not protected)", sha)
            gone = self.served.withdraw(sha)
            self.stats.inc("store.evictions")
            self.stats.inc("store.evicted_bytes", gone.size if gone else 0)
            await asyncio.to_thread(self.served.blobs.remove, sha)
        if choice.evict:
            self.catalog.changed()
            await self.catalog.flush(force=True)
        return choice.fits

    async def prune_unprotected(self) -> list[str]:
        """Remove every verified blob that no deployment in effect or rollback path needs."""
        keep = self.protected()
        removed = [sha for sha in self.served.verified if sha not in keep]
        for sha in removed:
            self.served.withdraw(sha)
            await asyncio.to_thread(self.served.blobs.remove, sha)
        if removed:
            self.catalog.changed()
            await self.catalog.flush(force=True)
        return removed

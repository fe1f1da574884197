"""The artifact store the rest of the gateway talks to: URL names -> verified blobs on disk.

Its parts, one job each, sharing the blobs on disk (:mod:`gateway.store.blobs`):

* :class:`~gateway.store.catalog.Catalog`: which URL names which blob, the publication order, the
  access times (persisted to ``catalog.json``) and what the index in effect asks to keep;
* :class:`~gateway.store.served.Served`: which blobs are verified (hashed since this start), what a
  URL finds (from memory only, so the download handler never blocks) and publishing, the one way in;
* :class:`~gateway.store.scrub.Scrubber`: blobs hashed again (reported broken, the scrub, ``cache
  verify``), quarantined and fetched again when they no longer match;
* :class:`~gateway.store.evict.Evictor`: what is protected, and room made under the quota.

This class builds them, opens and closes them together, and answers the questions many rooms ask
(``lookup`` and ``broken`` for the download handlers, ``is_verified`` for the poll answer, the
mirror, the gates and the status): a thin facade, kept because those callers are many. Everything
else is asked of the part that does it (``store.catalog.learn``, ``store.served.publish``,
``store.evictor.make_room``, ``store.scrubber.scrub_forever``). Disk work runs in worker threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

from gateway.runtime.stats import Stats
from gateway.store.blobs import BlobInfo, BlobStore
from gateway.store.catalog import Catalog
from gateway.store.events import StoreListener, Unheard
from gateway.store.evict import Evictor
from gateway.store.fill import Fills
from gateway.store.lookup import Pending, Streaming, Verified
from gateway.store.scrub import Scrubber
from gateway.store.served import Served


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
        self.stats = stats if stats is not None else Stats()
        self.fills = Fills()  # partials arriving in verified chunks (gateway.store.fill)
        self.catalog = Catalog(data_dir / "catalog.json", self.stats)
        self.served = Served(
            self.blobs, self.catalog, self.fills, listener if listener is not None else Unheard()
        )
        self.scrubber = Scrubber(self.served, self.catalog)
        self.evictor = Evictor(
            self.served, self.catalog, quota_bytes=quota_bytes, running=running, stats=self.stats
        )
        # What many rooms ask, answered by the part that knows: bound once, so the download and
        # poll hot paths pay no extra call for the facade.
        self.lookup: Callable[[str, str, str], Verified | Streaming | Pending | None] = self.served.lookup
        self.broken: Callable[[str, str, str], int] = self.scrubber.broken
        self.is_verified: Callable[[str], bool] = self.served.is_verified

    async def open(self) -> None:
        """Load the catalog and re-verify every blob before it may be served."""
        await self.catalog.load()
        for sha in await asyncio.to_thread(self.blobs.open):  # makes the folders, lists the blobs
            info = await asyncio.to_thread(self.blobs.check, sha)
            if info is not None:
                self.served.admit(sha, info)

    async def close(self) -> None:
        await self.scrubber.close()

    @property
    def verified(self) -> dict[str, BlobInfo]:
        """The verified blobs by sha256 (read only: the parts change it)."""
        return self.served.verified

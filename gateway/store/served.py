"""What is served: which blobs may be served as verified, what a URL finds there, and the one
way onto it (publishing).

A blob is served once it was hashed and checked since this start (at open, or published by the
mirror after its sha256 and signature matched). The download handler asks :meth:`Served.lookup`,
which answers from memory only so it never blocks: a verified file, bytes still arriving in
verified chunks (:mod:`gateway.store.fill`), a blob in effect but not here yet (the listener is
told it is missed), or nothing. Blobs stop being served elsewhere: found broken or rotten
(:mod:`gateway.store.scrub`), evicted or pruned (:mod:`gateway.store.evict`).
"""

from __future__ import annotations

import asyncio
import time

from gateway.store.blobs import BlobInfo, BlobStore
from gateway.store.catalog import Catalog
from gateway.store.events import StoreListener
from gateway.store.fill import Fills
from gateway.store.lookup import Pending, Streaming, Verified


class Served:
    def __init__(self, blobs: BlobStore, catalog: Catalog, fills: Fills, listener: StoreListener) -> None:
        self.blobs = blobs
        self.catalog = catalog
        self.fills = fills
        self.listener = listener
        self.verified: dict[str, BlobInfo] = {}
        self.checking: set[str] = set()  # blobs reported broken, no longer served, being hashed again

    def is_verified(self, sha256: str) -> bool:
        return sha256 in self.verified

    def lookup(self, model_id: str, version: str, filename: str) -> Verified | Streaming | Pending | None:
        entry, is_sig = self.catalog.named(model_id, version, filename)
        if entry is None:
            return None
        info = self.verified.get(entry.sha256)
        if info is None:
            if entry.sha256 not in self.catalog.in_effect:
                return None
            if entry.sha256 not in self.checking:
                self.listener.on_miss(entry.sha256)
            fill = None if is_sig else self.fills.get(entry.sha256)
            hint = self.listener.retry_after_s(entry.sha256)
            return Pending(hint) if fill is None else Streaming(fill, hint)
        if not is_sig:
            self.catalog.touch(entry.sha256, time.time())
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

    async def publish(self, sha256: str, signature: bytes) -> BlobInfo:
        """Move a verified partial into place with its signature and serve it from now on."""
        info = await asyncio.to_thread(self.blobs.publish, sha256, signature)
        self.verified[sha256] = info
        self.fills.finish(sha256)
        self.catalog.touch(sha256, time.time())
        await self.catalog.flush(force=True)
        self.listener.on_verified(sha256)
        return info

    def withdraw(self, sha256: str) -> BlobInfo | None:
        """Stop serving a blob (not again until checked again or published)."""
        return self.verified.pop(sha256, None)

    def admit(self, sha256: str, info: BlobInfo) -> None:
        """A blob hashed and found good (at open, or ``cache verify``) is served."""
        self.verified[sha256] = info

    def take_back(self, sha256: str, info: BlobInfo) -> None:
        """A blob hashed again and found good is served again (a re-fetch may have published it
        meanwhile: that one stays)."""
        self.verified.setdefault(sha256, info)

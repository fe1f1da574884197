"""Verified blobs hashed again: one the download handler found broken, all of them at a bounded rate
(the scrub), or one on request (``cache verify``).

* a blob the download handler finds missing, short, no longer a regular file or written since it
  was verified (its ctime moved) is reported with :meth:`Scrubber.broken`: it is no longer served at
  once (devices get 503 with ``Retry-After``), is hashed again off the loop, and is either taken
  back or quarantined and fetched again (:meth:`StoreListener.on_miss`, which the mirror handles);
* the scrub (:meth:`Scrubber.scrub_pass`) re-hashes every verified blob at a bounded rate, so bit
  rot the ctime cannot show is found too. A blob that no longer matches is never served again, is
  moved to ``quarantine/`` and fetched again. A download already streaming when the scrub finds it
  is not cut: it finishes with what it started (the device checks the sha256).

What is served, and the one way in (publishing), is :mod:`gateway.store.served`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.runtime.tasks import TaskGroup
from gateway.store.blobs import QUARANTINE_MAX_FILES
from gateway.store.catalog import Catalog
from gateway.store.hashing import Hashed, Inode, ScrubReport, hash_file
from gateway.store.served import Served

log = logging.getLogger(__name__)


class Scrubber:
    def __init__(self, served: Served, catalog: Catalog) -> None:
        self.served = served
        self.blobs = served.blobs
        self.catalog = catalog
        self.listener = served.listener
        self.report = ScrubReport()  # the last pass's (for /status)
        self.quarantined: list[str] = []  # this run's quarantined files (the newest few), for status
        self._tasks = TaskGroup()

    async def close(self) -> None:
        await self._tasks.close()

    # -- one blob reported broken -------------------------------------------------------------------

    def broken(self, model_id: str, version: str, filename: str) -> int:
        """The download handler found this URL's verified blob missing, short, or written since it
        was verified: stop serving it, hash it again off the loop, and take it back or quarantine
        and re-fetch it. Returns the ``Retry-After`` for the device meanwhile."""
        entry, _ = self.catalog.named(model_id, version, filename)
        if entry is None:
            return 30
        sha = entry.sha256
        if self.served.withdraw(sha) is not None:
            log.warning("blob %s is missing, short or changed on disk: no longer served, checking it", sha)
            self.catalog.changed()
            self.served.checking.add(sha)
            self._tasks.spawn(self._check_again(sha), name=f"recheck {sha[:12]}")
        return self.listener.retry_after_s(sha)

    async def _check_again(self, sha: str) -> None:
        try:
            result, inode, _ = await hash_file(self.blobs.blob_path(sha), sha, rate_bytes_per_s=0)
            if result is Hashed.GOOD:
                info = await asyncio.to_thread(self.blobs.info, sha)
                if info is not None and inode is not None and info.ctime_ns == inode.ctime_ns:
                    self.served.take_back(sha, info)
                    log.info("blob %s hashed again and still good: serving it again", sha)
                    self.listener.on_verified(sha)
                    return
            await self._set_aside(sha, result, inode)
        finally:
            self.served.checking.discard(sha)
        if not self.served.is_verified(sha):
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
        elif not self.served.is_verified(sha):
            await asyncio.to_thread(self.blobs.remove, sha)

    # -- one blob on request ------------------------------------------------------------------------

    async def recheck(self, sha256: str) -> bool:
        """Re-hash one blob (``cache verify``); drops it when corrupt (it is fetched again)."""
        info = await asyncio.to_thread(self.blobs.check, sha256)
        if info is None:
            self.served.withdraw(sha256)
            self.listener.on_miss(sha256)
            return False
        self.served.admit(sha256, info)
        return True

    # -- the scrub ----------------------------------------------------------------------------------

    async def scrub_pass(self, rate_bytes_per_s: float) -> ScrubReport:
        """Re-hash every verified blob once, at most ``rate_bytes_per_s``; quarantine and re-fetch
        any that no longer matches. The blob stays served while it is hashed (it is presumed good)."""
        report = ScrubReport(
            started_at=time.time(), passes=self.report.passes, total_mismatches=self.report.total_mismatches
        )
        verified = self.served.verified
        for sha in sorted(verified):
            before = verified.get(sha)
            if before is None or sha in self.served.checking:
                continue  # evicted, or already being checked, since the pass began
            result, inode, n = await hash_file(
                self.blobs.blob_path(sha), sha, rate_bytes_per_s=rate_bytes_per_s
            )
            report.blobs += 1
            report.bytes += n
            if result is Hashed.GOOD or verified.get(sha) is not before:
                continue  # good, or evicted or published again while it was hashed
            self.served.withdraw(sha)
            self.catalog.changed()
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
        self.report = report
        if report.mismatches or report.missing:
            await self.catalog.flush(force=True)
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

"""Fetching one artifact: resumable, single-flight, capped, verified before it is published.

However many devices ask for the same missing artifact, one transfer crosses the uplink: tasks
are keyed by sha256. A transfer resumes from the bytes already on disk (also after a restart or a
``kill -9``), with ``Range`` and ``If-Range`` so a changed upstream file restarts from zero instead
of splicing two files. Bytes beyond the manifest's ``length`` abort the transfer (endless-data
attack); at the end the sha256 and the detached signature are checked, and only then is the blob
published. Transport failures retry with exponential backoff and full jitter; a bad file is
dropped, counted, and tried again later in case the registry fixes it.

The newest index decides where an artifact lives: when it names other ``artifact_url`` or
``signature_url`` for a sha256 whose transfer is running or waiting to retry, that transfer is
cancelled and started again on the new URLs (a partial from the old URL is not resumed: its
``If-Range`` validator belongs to the other file).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.core.errors import (
    DigestMismatchError,
    LengthMismatchError,
    RemoteDataError,
    StorageError,
    TransportError,
    UntrustedError,
)
from gateway.core.human import size
from gateway.core.manifest import Deployment
from gateway.core.pacing import Progress, backoff_s
from gateway.core.progress import ProgressLog
from gateway.core.settings import MirrorSettings
from gateway.mirror.chunked import ChunkedDownload, NoChunkList
from gateway.mirror.pace import Pacer, system_clock
from gateway.mirror.upstream import Upstream
from gateway.runtime.diskspace import disk_space, space_refusal
from gateway.runtime.stats import Stats
from gateway.runtime.tasks import TaskGroup
from gateway.store.artifacts import ArtifactStore
from gateway.trust.keys import MAX_SIGNATURE_BYTES, PublicKey, verify_file

log = logging.getLogger(__name__)

WRITE_BATCH_BYTES = 1 << 20
BAD_DATA_RETRY_S = 300.0


@dataclass(frozen=True)
class Failure:
    """A transfer's failed attempts so far (an import reads them to report what became of it)."""

    attempts: int
    why: str
    bad_data: bool  # refused (length, sha256, signature) rather than cut or unstored

    @classmethod
    def after(cls, previous: Failure | None, why: str, *, bad_data: bool) -> Failure:
        return cls((previous.attempts if previous else 0) + 1, why, bad_data)


class Fetcher:
    def __init__(
        self,
        store: ArtifactStore,
        upstream: Upstream,
        keys: Callable[[], Mapping[str, PublicKey]],
        settings: MirrorSettings,
        stats: Stats,
        *,
        min_free_bytes: int = 0,
        pace: Pacer | None = None,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.keys = keys
        self.settings = settings
        self.stats = stats
        self.min_free_bytes = min_free_bytes
        self.pace = pace or Pacer(settings, system_clock)  # the cap, from mirror.schedule
        self.progress: dict[str, Progress] = {}
        self.progress_log = ProgressLog(settings.progress_log_interval_s)  # percent, rate, ETA lines
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._where: dict[str, tuple[str, str]] = {}  # sha256 -> (artifact_url, signature_url) in flight
        self._tails: dict[str, tuple[int, bytes]] = {}  # see gateway.mirror.chunked
        self._publishing: set[str] = set()  # verified, being published: too late (and no need) to move
        self._group = TaskGroup()
        self._slots = asyncio.Semaphore(2)  # two transfers at once share the uplink
        self.failures: dict[str, Failure] = {}  # sha256 -> its failed attempts so far, the last one's why
        self._wakes: dict[str, asyncio.Event] = {}

    def ensure(self, dep: Deployment) -> asyncio.Task[None] | None:
        """Start (once) the transfer of ``dep``'s artifact unless it is already verified here."""
        if self.store.is_verified(dep.sha256):
            return None
        where = (dep.artifact_url, dep.signature_url)
        task = self._tasks.get(dep.sha256)
        previous: asyncio.Task[None] | None = None
        if (
            task is not None
            and not task.done()
            and self._where.get(dep.sha256) != where
            and dep.sha256 not in self._publishing
        ):
            log.info("%s moved to %s: restarting its transfer there", dep.key, dep.artifact_url)
            task.cancel()
            previous, task = task, None
        if task is None or task.done():
            task = self._group.spawn(self._run(dep, after=previous), name=f"fetch {dep.key}")
            self._tasks[dep.sha256] = task
            self._where[dep.sha256] = where
        return task

    def retry_now(self, sha256: str) -> None:
        """End the wait before a failed transfer's next attempt (a bundle with it was just mounted)."""
        wake = self._wakes.get(sha256)
        if wake is not None:
            wake.set()

    def cancel_except(self, keep: set[str]) -> None:
        for sha, task in list(self._tasks.items()):
            if sha not in keep:
                task.cancel()
                self.store.fills.fail(sha, "no longer in effect")
                self._tails.pop(sha, None)
                self._tasks.pop(sha, None)
                self._where.pop(sha, None)

    async def close(self) -> None:
        await self._group.close()

    async def _run(self, dep: Deployment, *, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:
            # The cancelled transfer still flushes its last bytes into the shared partial file:
            # let it finish before this one opens that file.
            await asyncio.wait({after})
        attempt = 0
        if not self.store.is_verified(dep.sha256):
            log.info("mirroring %s (%s) from the upstream", dep.key, size(dep.length))
        while not self.store.is_verified(dep.sha256):
            try:
                async with self._slots:
                    await self._transfer(dep)
                self.failures.pop(dep.sha256, None)
                return
            except TransportError as exc:
                failure = Failure.after(self.failures.get(dep.sha256), str(exc), bad_data=False)
                self.stats.error("mirror.transport_errors", f"{dep.key}: {exc}")
                delay = backoff_s(
                    attempt,
                    initial_s=self.settings.retry_initial_s,
                    max_s=self.settings.retry_max_s,
                    rand=random.random(),
                )
                log.warning("fetch %s failed (%s); retrying in %.1fs", dep.key, exc, delay)
            except RemoteDataError as exc:
                self.store.fills.fail(dep.sha256, str(exc))  # waiting downloads are cut off
                failure = Failure.after(self.failures.get(dep.sha256), str(exc), bad_data=True)
                self.stats.error("mirror.rejected_artifacts", f"{dep.key}: {exc}")
                delay = BAD_DATA_RETRY_S * (0.5 + random.random())
                log.error("rejected artifact %s: %s; the last good state keeps serving", dep.key, exc)
            except StorageError as exc:
                self.store.fills.fail(dep.sha256, str(exc))
                failure = Failure.after(self.failures.get(dep.sha256), str(exc), bad_data=False)
                self.stats.error("mirror.storage_errors", f"{dep.key}: {exc}")
                delay = backoff_s(
                    attempt, initial_s=5.0, max_s=self.settings.retry_max_s, rand=random.random()
                )
                log.error("cannot store %s: %s; retrying in %.1fs", dep.key, exc, delay)
            self.failures[dep.sha256] = failure
            attempt += 1
            await self._pause(dep.sha256, delay)

    async def _pause(self, sha256: str, delay: float) -> None:
        """Wait ``delay`` before the next attempt, or until :meth:`retry_now`."""
        wake = self._wakes[sha256] = asyncio.Event()
        try:
            await asyncio.wait_for(wake.wait(), delay)
        except TimeoutError:
            pass
        finally:
            if self._wakes.get(sha256) is wake:
                del self._wakes[sha256]

    async def _transfer(self, dep: Deployment) -> None:
        store = self.store.blobs
        if not await self.store.evictor.make_room(dep.length):
            raise StorageError(
                f"{dep.key}: {dep.length} bytes do not fit the quota without evicting protected artifacts"
            )
        free, fs_total = await asyncio.to_thread(disk_space, store.blob_dir)
        offset, meta = await asyncio.to_thread(store.partial_state, dep.sha256)
        refusal = space_refusal(
            dep.key,
            free=free,
            need=dep.length - offset,
            configured=self.min_free_bytes,
            fs_total_bytes=fs_total,
        )
        if refusal is not None:
            raise StorageError(refusal)
        if offset > dep.length or (meta.get("url") not in (None, dep.artifact_url)):
            offset, meta = 0, {}
        progress = self.progress.setdefault(dep.sha256, Progress(total=dep.length))
        whole = dep.chunks is None
        if not whole:
            chunked = ChunkedDownload(
                dep,
                self.upstream,
                store,
                self.store.fills,
                self.pace,
                self.stats,
                self._tails,
                self.progress_log,
            )
            try:
                offset, hasher = await chunked.run(meta, progress)
            except NoChunkList as exc:
                log.info("%s; it is verified whole before it is served", exc)
                whole = True
        if whole:
            self.store.fills.fail(dep.sha256, "published without a chunk list")
            hasher = hashlib.sha256()
            if offset:
                hasher = await asyncio.to_thread(_hash_prefix, store.partial_path(dep.sha256), offset)
            progress.update(offset, time.monotonic())
            if offset < dep.length:
                offset, hasher = await self._download(dep, offset, meta.get("etag"), hasher, progress)
        if offset != dep.length:
            raise LengthMismatchError(f"{dep.key}: got {offset} bytes, the manifest says {dep.length}")
        if hasher.hexdigest() != dep.sha256:
            await asyncio.to_thread(store.drop_partial, dep.sha256)
            raise DigestMismatchError(
                f"{dep.key}: sha256 {hasher.hexdigest()} is not the manifest's {dep.sha256}"
            )
        sig = (await self.upstream.get(dep.signature_url, max_bytes=MAX_SIGNATURE_BYTES)).body
        try:
            kid = await asyncio.to_thread(
                verify_file, self.keys(), sig, store.partial_path(dep.sha256), dep.sha256
            )
        except UntrustedError as exc:
            raise UntrustedError(f"{dep.key}: {exc}") from exc
        self._publishing.add(dep.sha256)
        try:
            await self.store.served.publish(dep.sha256, sig)
        finally:
            self._publishing.discard(dep.sha256)
        self.progress.pop(dep.sha256, None)
        self.stats.inc("mirror.artifacts_verified")
        log.info("mirrored and verified %s (%s, signed by %s…)", dep.key, size(dep.length), kid[:12])

    async def _download(
        self, dep: Deployment, offset: int, etag: str | None, hasher: hashlib._Hash, progress: Progress
    ) -> tuple[int, hashlib._Hash]:
        store = self.store.blobs
        stream = await self.upstream.stream(dep.artifact_url, offset=offset, if_range=etag)
        try:
            if stream.start != offset:  # the upstream sent the whole file (changed, or no ranges)
                offset, hasher = 0, hashlib.sha256()
            if stream.total is not None and stream.total != dep.length:
                raise LengthMismatchError(
                    f"{dep.key}: upstream has {stream.total} bytes, the manifest says {dep.length}"
                )
            await asyncio.to_thread(
                store.save_partial_meta,
                dep.sha256,
                {"url": dep.artifact_url, "etag": stream.etag, "length": dep.length},
            )
            # Opened and closed in the loop (two fast syscalls): a cancellation between a worker
            # thread's open and our await would otherwise leak the file.
            f = store.open_partial(dep.sha256, offset)
            try:
                buf = bytearray()
                async for chunk in stream.chunks():
                    if offset + len(buf) + len(chunk) > dep.length:
                        raise LengthMismatchError(f"{dep.key}: upstream sent more than {dep.length} bytes")
                    await self.pace.take(len(chunk))
                    buf += chunk
                    if len(buf) >= WRITE_BATCH_BYTES:
                        offset = await self._flush(f, buf, hasher, offset)
                        buf = bytearray()
                        progress.update(offset, time.monotonic())
                        if line := self.progress_log.report(
                            dep.key, offset, dep.length, progress.rate_bps, time.monotonic()
                        ):
                            log.info(line)
                if buf:
                    offset = await self._flush(f, buf, hasher, offset)
                    progress.update(offset, time.monotonic())
            except BaseException:
                if buf:
                    offset = await self._flush(f, buf, hasher, offset)
                raise
            finally:
                f.close()
        except LengthMismatchError:
            await asyncio.to_thread(store.drop_partial, dep.sha256)
            raise
        finally:
            await stream.close()
        return offset, hasher

    async def _flush(self, f: object, buf: bytearray, hasher: hashlib._Hash, offset: int) -> int:
        data = bytes(buf)
        await asyncio.to_thread(self.store.blobs.append, f, data)
        self.stats.inc("mirror.bytes", len(data))
        hasher.update(data)
        return offset + len(data)


def _hash_prefix(path: Path, length: int) -> hashlib._Hash:
    """The running hash of a partial's first ``length`` bytes, to continue a resumed transfer."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        remaining = length
        while remaining:
            chunk = f.read(min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
    return h

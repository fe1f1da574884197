"""The samples desk: takes offers (HTTP and MQTT), keeps them, runs the budget, uploads the chosen.

An offer is checked (:func:`gateway.core.samples.offer.parse_offer`), then kept in the
:class:`~gateway.samples.store.SampleStore` before it is answered. Every ``choose_interval_s`` the
budget (:mod:`gateway.core.samples.budget`) marks what goes up; each chosen sample then goes up in
two steps, in this order: its blob by idempotent PUT (:mod:`.upload`), then its index record into
the durable outbox (kind ``training_sample``, delivered by the uplink like every record), and only
then is it marked sent. So across a ``kill -9`` or an outage of the upload server nothing chosen is
lost (it is still chosen, and is PUT again: the same name and bytes) and no blob is stored twice.
The index record is appended with the sample's hash as its key in the outbox's own commit
(:meth:`~gateway.uplink.outbox.Outbox.append_once`), so a retry after a kill between that commit
and the store's mark appends nothing: each sample has exactly one index record.

The store is used from one worker thread at a time (a lock); the event loop never touches the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.core import jsondoc
from gateway.core.errors import FormatError, StorageError, TransportError
from gateway.core.samples.offer import Limits, Offer, parse_offer
from gateway.core.settings import Settings
from gateway.runtime.stats import Stats
from gateway.samples.store import Kept, SampleStore
from gateway.samples.upload import BlobUploader, UploadRefused

log = logging.getLogger(__name__)
T = TypeVar("T")
RECORD_KIND = "training_sample"
MaybeFuture = asyncio.Future[Any] | None


class Journal(Protocol):
    """The outbox (:meth:`gateway.uplink.outbox.Outbox.append_once`)."""

    def append_once(self, kind: str, body: dict[str, Any], now: float, *, key: str) -> bool:
        """Blocking: durable when it returns; False when a record with ``key`` was appended before."""
        ...


class SampleDesk:
    def __init__(
        self, settings: Settings, data: Path, outbox: Journal, stats: Stats, clock: Callable[[], float]
    ) -> None:
        s = settings.samples
        self.settings = s
        self.enabled = s.enabled
        self.limits = Limits(raw=s.raw, max_bytes=s.max_bytes, max_embedding_dims=s.max_embedding_dims)
        self.store = SampleStore(data / "samples", s)
        self.uploader = BlobUploader(
            s.upload_url,
            s.upload_token or settings.uplink.ingest_token,
            timeout_s=s.upload_timeout_s,
            ca_bundle=settings.mirror.ca_bundle,
        )
        self.outbox = outbox
        self.stats = stats
        self.clock = clock
        self.retry_initial_s = settings.mirror.retry_initial_s
        self.retry_max_s = settings.mirror.retry_max_s
        self.upload_failures = 0
        self.last_failure = ""
        self._lock = threading.Lock()
        self._summary: dict[str, Any] = {}

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                try:
                    return fn(*args)
                finally:
                    self._summary = self._summarize()

        return await asyncio.to_thread(locked)

    async def __aenter__(self) -> SampleDesk:
        if self.enabled:
            await self._call(self.store.open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.uploader.close()
        await asyncio.to_thread(self.store.close)

    def mqtt_hook(
        self, other: Callable[[str, str, bytes, float], MaybeFuture]
    ) -> Callable[[str, str, bytes], MaybeFuture]:
        """The broker's ingest hook: ``devices/{id}/samples`` here, any other topic to ``other``."""

        def hook(device_id: str, topic: str, payload: bytes) -> MaybeFuture:
            if topic.endswith("/samples"):
                return self.mqtt_message(device_id, payload, self.clock())
            return other(device_id, topic, payload, self.clock())

        return hook

    async def take(self, device_id: str, doc: Any, now: float) -> Kept:
        """Keep a device's sample; FormatError: invalid (nothing changed); StorageError: not kept."""
        offer = parse_offer(doc, self.limits)
        return await self._keep(device_id, offer, now)

    async def _keep(self, device_id: str, offer: Offer, now: float) -> Kept:
        kept = await self._call(self.store.put, device_id, offer, now)
        self.stats.inc(f"samples.{kept.outcome}")
        return kept

    def mqtt_message(self, device_id: str, payload: bytes, now: float) -> asyncio.Future[Kept] | None:
        """``devices/{id}/samples``: the broker acknowledges once the sample is kept (a returned
        future); an invalid one is counted, logged and acknowledged, so the device does not resend it."""
        if not self.enabled:
            return None
        try:
            offer = parse_offer(jsondoc.loads(payload), self.limits)
        except FormatError as exc:
            self.stats.error("samples.invalid", f"{device_id}: {exc}")
            log.warning("dropped a sample from %s: %s", device_id, exc)
            return None
        fut = asyncio.ensure_future(self._keep(device_id, offer, now))
        fut.add_done_callback(_retrieve)
        return fut

    async def run(self) -> None:
        """Choose, upload what was chosen, wait; an unreachable server is retried with backoff."""
        if not self.enabled:
            return
        delay = self.retry_initial_s
        last: float | None = None
        while True:
            # the budget releases up to the next choice: the interval, or longer when the last
            # round's uploads took longer (so the day's last round still releases all of it)
            now = self.clock()
            ahead = max(self.settings.choose_interval_s, now - last if last is not None else 0.0)
            last = now
            await self._call(self.store.choose, now, ahead)
            try:
                await self._upload_chosen()
                delay = self.retry_initial_s
                await asyncio.sleep(self.settings.choose_interval_s)  # a periodic timer
            except TransportError as exc:
                self.upload_failures += 1
                self.last_failure = str(exc)
                self.stats.error("samples.upload_failures", str(exc))
                await asyncio.sleep(min(delay, self.settings.choose_interval_s))
                delay = min(delay * 2, self.retry_max_s)

    async def _upload_chosen(self) -> None:
        if not self.settings.upload_url:
            return  # kept until their day ends: nothing is sent without a place to send it
        for sha, meta in await self._call(self.store.chosen):
            data = await self._call(self.store.blob, sha)
            if hashlib.sha256(data).hexdigest() != sha:  # rot on disk: never PUT under a wrong name
                self.stats.error("samples.damaged", f"the content of {sha} no longer matches its hash")
                await self._call(self.store.refused, sha)
                continue
            try:
                await self.uploader.put(sha, data, meta["content_type"])
            except UploadRefused as exc:  # never taken by this server: counted, and the rest go on
                self.stats.error("samples.refused_by_server", str(exc))
                log.warning("%s; the sample is dropped", exc)
                await self._call(self.store.refused, sha)
                continue
            record = {
                "sha256": sha,
                "url": self.uploader.url_of(sha),
                "device_id": meta["device"],
                "reason": meta["reason"],
                "class": meta["class"],
                "confidence": meta["confidence"],
                "model_id": meta["model_id"],
                "model_version": meta["model_version"],
                "content_type": meta["content_type"],
                "bytes": meta["size"],
                "offered_at": meta["offered_at"],
            }
            # keyed by the hash in the outbox's own commit: after a kill between this append and
            # the mark below, the retry finds the key and appends nothing
            await asyncio.to_thread(
                self.outbox.append_once, RECORD_KIND, record, self.clock(), key=f"sample:{sha}"
            )
            await self._call(self.store.sent, sha)

    def _summarize(self) -> dict[str, Any]:
        st = self.store
        counts: dict[str, dict[str, int]] = {}
        for key, n in st.counts.items():
            what, _, reason = key.partition(":")
            counts.setdefault(what, {})[reason] = n
        return {
            "kept_now": len(st.meta) - st.chosen_count,
            "waiting_upload": st.chosen_count,
            "kept_bytes": st.kept_bytes,
            "day_spent_bytes": st.ledger.spent,
            "counts": counts,
        }

    def status(self) -> dict[str, Any]:
        """What ``/status``, Prometheus and the dashboard show (read from memory, no disk)."""
        s = self.settings
        return {
            "enabled": self.enabled,
            "raw": s.raw,
            "budget_bytes_per_day": s.budget_bytes_per_day,
            "upload_url": s.upload_url,
            "upload_failures": self.upload_failures,
            "recovered": self.store.recovered,
            "last_failure": self.last_failure,
            **self._summary,
        }


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a failed keep as seen (the broker reads it too; a QoS 0 message has nobody else)."""
    if not fut.cancelled() and isinstance(fut.exception(), StorageError):
        log.error("a sample over MQTT was not kept: %s", fut.exception())

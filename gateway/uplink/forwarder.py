"""Drains the outbox into each configured sink, at least once, with backoff and jitter.

Each sink keeps its own cursor in the outbox (a record is deleted once every sink has it), so a
cloud broker that is down does not hold back the HTTP ingest, and the reverse. After an outage the
drop counters (what the outbox had to shed) go upstream as one ``drops`` record. Every error a
sink raises, of any type, is the forwarder's to retry with backoff: none ends delivery (the
supervisor in :mod:`gateway.runtime.supervisor` restarts the whole forwarder only if one escapes anyway).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

from gateway.core.errors import StorageError, TransportError
from gateway.core.pacing import backoff_s
from gateway.runtime.stats import Stats
from gateway.uplink.outbox import Outbox, Record
from gateway.uplink.sinks import DeliveryError, Rejected, Sink

log = logging.getLogger(__name__)

# One interval's report of a large site in one request: 10,000 devices' samples fit.
BATCH_RECORDS = 20_000
BATCH_BYTES = 16 << 20


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        sinks: Sequence[Sink],
        stats: Stats,
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
        idle_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.sinks = list(sinks)
        self.stats = stats
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.idle_s = idle_s
        self.clock = clock
        self.wake = asyncio.Event()
        self.link_up: dict[str, bool] = {s.name: True for s in self.sinks}

    async def run(self) -> None:
        await asyncio.gather(*(self._drain(s) for s in self.sinks))

    async def _drain(self, sink: Sink) -> None:
        failures = 0
        while True:
            try:
                await self._drain_once(sink, failures)
                failures = 0
            except StorageError as exc:  # the outbox itself failed (disk, a damaged page): wait
                failures += 1
                self.stats.error("uplink.outbox_errors", str(exc))
                if failures == 1:
                    log.error("uplink paused: %s", exc)
                await self._pause(failures)
            except Exception as exc:  # anything else (a bug, a library error): never the end of delivery
                failures += 1
                self.stats.error(f"uplink.{sink.name}.errors", repr(exc))
                log.exception("uplink %s failed unexpectedly; retrying with backoff", sink.name)
                self.link_up[sink.name] = False
                await self._pause(failures)

    async def _pause(self, failures: int) -> None:
        await asyncio.sleep(
            backoff_s(failures, initial_s=self.retry_initial_s, max_s=self.retry_max_s, rand=random.random())
        )

    async def _drain_once(self, sink: Sink, failures: int) -> None:
        while True:
            batch = await asyncio.to_thread(self.outbox.peek, sink.name, BATCH_RECORDS, BATCH_BYTES)
            if not batch:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.idle_s)
                except TimeoutError:
                    pass
                continue
            try:
                refused = await self._deliver(sink, batch)
            except Exception as exc:  # every sink error is ours to retry, whatever its type
                typed = exc if isinstance(exc, DeliveryError) else None
                done = typed.delivered_seq if typed else None  # a sink that got part of it through
                if done is not None:
                    await asyncio.to_thread(self.outbox.ack, sink.name, done)
                    self.stats.inc(f"uplink.{sink.name}.records", sum(1 for r in batch if r.seq <= done))
                delay = (typed.retry_after_s if typed else None) or backoff_s(
                    failures, initial_s=self.retry_initial_s, max_s=self.retry_max_s, rand=random.random()
                )
                failures += 1
                if not isinstance(exc, TransportError):
                    log.error("uplink %s: unexpected sink error: %r", sink.name, exc, exc_info=exc)
                elif self.link_up[sink.name]:
                    log.warning("uplink %s down (%s); retrying with backoff", sink.name, exc)
                self.link_up[sink.name] = False
                self.stats.error(f"uplink.{sink.name}.errors", str(exc))
                await asyncio.sleep(delay)
                continue
            if refused:
                self.stats.inc(f"uplink.{sink.name}.rejected_records", refused)
                await self.report_drops()
            await asyncio.to_thread(self.outbox.ack, sink.name, batch[-1].seq)
            self.stats.inc(f"uplink.{sink.name}.records", len(batch))
            failures = 0
            if not self.link_up[sink.name]:
                log.info("uplink %s is back", sink.name)
                self.link_up[sink.name] = True
                await self.report_drops()

    async def _deliver(self, sink: Sink, batch: Sequence[Record]) -> int:
        """Deliver; a batch the cloud refuses is split until the refused records stand alone, so one
        poison record costs only itself. Returns how many records were refused for good."""
        try:
            await sink.deliver(batch)
            return 0
        except Rejected as exc:
            if len(batch) == 1:
                log.error(
                    "%s refused record %d (%s) for good: %s", sink.name, batch[0].seq, batch[0].kind, exc
                )
                self.stats.error(f"uplink.{sink.name}.rejected", str(exc))
                await asyncio.to_thread(self.outbox.count_drop, batch[0].kind, f"refused by {sink.name}")
                return 1
            mid = len(batch) // 2
            return await self._deliver(sink, batch[:mid]) + await self._deliver(sink, batch[mid:])

    async def report_drops(self) -> None:
        drops = await asyncio.to_thread(self.outbox.take_drops)
        if drops:
            log.warning("the outbox shed records while the uplink was down: %s", drops)
            await self.outbox.append("drops", {"dropped": drops}, self.clock())

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every sink has everything appended so far (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(not self.outbox.peek(s.name, max_records=1) for s in self.sinks):
                return True
            self.wake.set()
            await asyncio.sleep(0.05)
        return False

    async def close(self) -> None:
        for s in self.sinks:
            await s.close()

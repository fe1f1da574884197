"""The sinks' failures are one typed value, :class:`~gateway.uplink.sinks.DeliveryError`, that the
forwarder reads by its fields (no attributes added to an exception and read back with getattr).

The HTTP cases use a real ingest server on an ephemeral port; the partial-delivery case drives the
forwarder through the narrow :class:`~gateway.uplink.sinks.Sink` seam with a small sink that gets a
random prefix of each batch through (the real MQTT bridge's partial PUBACKs cannot be provoked on
demand at a chosen record), over several seeds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiohttp import web

from gateway.runtime.stats import Stats
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.outbox import Outbox, Record
from gateway.uplink.sinks import DeliveryError, HttpSink, Rejected
from tests.gw import until


async def _ingest(answers: list[tuple[int, dict[str, str]]]) -> tuple[web.AppRunner, str, list[int]]:
    """A real ingest that gives the queued answers in turn, then 200; the statuses it gave."""
    given: list[int] = []

    async def ingest(request: web.Request) -> web.Response:
        await request.read()
        status, headers = answers.pop(0) if answers else (200, {})
        given.append(status)
        return web.Response(status=status, text="no", headers=headers)

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/ingest", given


def _record(seq: int) -> Record:
    return Record(seq=seq, kind="event", at=1.0, body={"i": seq})


async def test_the_http_sink_says_status_and_retry_after_as_fields() -> None:
    runner, url, _ = await _ingest([(503, {"Retry-After": "7"}), (429, {}), (400, {})])
    sink = HttpSink(url, "", "site-1")
    try:
        with pytest.raises(DeliveryError) as busy:
            await sink.deliver([_record(1)])
        assert (busy.value.status, busy.value.retry_after_s, busy.value.url) == (503, 7.0, url)
        assert busy.value.delivered_seq is None and not isinstance(busy.value, Rejected)
        with pytest.raises(DeliveryError) as later:
            await sink.deliver([_record(1)])
        assert (later.value.status, later.value.retry_after_s) == (429, None)
        with pytest.raises(Rejected) as refused:  # the batch's content, for good
            await sink.deliver([_record(1)])
        assert refused.value.status == 400
    finally:
        await sink.close()
        await runner.cleanup()
    down = HttpSink(url, "", "site-1")  # nobody listens there any more
    try:
        with pytest.raises(DeliveryError) as gone:
            await down.deliver([_record(1)])
        assert gone.value.status is None and gone.value.__cause__ is not None
    finally:
        await down.close()


async def test_the_forwarder_waits_the_servers_retry_after_not_its_own_backoff(tmp_path: Path) -> None:
    # The forwarder's own backoff would be up to 60 s; the ingest asks for 0.05 s twice.
    runner, url, given = await _ingest([(503, {"Retry-After": "0.05"}), (503, {"Retry-After": "0.05"})])
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    sink = HttpSink(url, "", "site-1")
    fwd = Forwarder(box, [sink], Stats(), retry_initial_s=60.0, retry_max_s=60.0, idle_s=0.05)
    task = asyncio.create_task(fwd.run())
    try:
        await box.append("event", {"i": 0}, 1.0)
        await until(
            lambda: given == [503, 503, 200], what="delivered after two Retry-After waits", timeout_s=20
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fwd.close()
        box.close()
        await runner.cleanup()


class _Partial:
    """Gets a random prefix of each batch through, then fails with the typed error saying how far."""

    name = "http"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.got: list[int] = []

    async def deliver(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(0)
        n = self.rng.randint(0, len(records))
        self.got.extend(r.body["i"] for r in records[:n])
        if n < len(records):
            done = records[n - 1].seq if n else None
            raise DeliveryError("part of the batch", url="test:", delivered_seq=done)

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("seed", range(5))
async def test_what_a_sink_got_through_is_never_sent_again(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    sink = _Partial(rng)
    fwd = Forwarder(box, [sink], Stats(), retry_initial_s=0.005, retry_max_s=0.02, idle_s=0.02)
    task = asyncio.create_task(fwd.run())
    try:
        for i in range(80):
            await box.append("event", {"i": i}, 1.0)
            if rng.random() < 0.2:
                await asyncio.sleep(rng.uniform(0, 0.02))
        await until(lambda: len(sink.got) >= 80, what=f"every record (seed {seed})")
        assert sink.got == list(range(80))  # each once, in order: the typed prefix was acknowledged
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        box.close()

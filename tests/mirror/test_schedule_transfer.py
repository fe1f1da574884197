"""A real transfer through the uplink schedule: paused, then capped, then free, at the window edges.

The gateway runs with an injected clock: real time shifted so that it starts at 11:59:58 UTC of
the coming day (trusted: it is past the clock floor); the upstream is nginx from Debian. The
schedule:

* 11:59-12:00 paused: not one byte is stored;
* 12:00:00-12:00:03 at 1 MB/s: never more than the cap allows since the edge (plus the bucket's
  one-second burst and one chunk in flight);
* after 12:00:03 the default (no cap): the rest comes, and the artifact is verified.

The progress (what ``ota-gateway status`` shows) is read at random instants, several seeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from gateway.mirror.upstream import CHUNK_BYTES
from tests.conftest import Registry
from tests.gw import gateway_settings, until
from tests.peers import nginx

RATE = 1_000_000
MODEL = os.urandom(12 << 20)
SHA = hashlib.sha256(MODEL).hexdigest()
SCHEDULE = (
    {"from": "11:59", "to": "12:00", "paused": True},
    {"from": "12:00", "to": "12:00:03", "bytes_per_s": RATE},
)


class ShiftedClock:
    """Real time, shifted to start at 11:59:58 UTC of the coming day."""

    def __init__(self) -> None:
        now = time.time()
        self.shift = now - now % 86400 + 86400 + 11 * 3600 + 59 * 60 + 58 - now

    def __call__(self) -> float:
        return time.time() + self.shift

    def since(self, hhmmss: str) -> float:
        """Seconds since ``hhmmss`` of that day (negative: still ahead)."""
        h, m, s = map(int, hhmmss.split(":"))
        now = self()
        return now - (now - now % 86400 + h * 3600 + m * 60 + s)


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_transfer_pauses_then_follows_the_cap_then_runs_free(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    from gateway.core.schedule import parse_schedule
    from gateway.service.wiring import Gateway

    reg.publish(MODEL)
    rng = random.Random(seed)
    with nginx(reg.root) as upstream:
        settings = gateway_settings(
            reg,
            tmp_path / "data",
            upstream=upstream.url,
            mirror={"schedule": parse_schedule(list(SCHEDULE)), "schedule_timezone": "UTC"},
        )
        clock = ShiftedClock()
        gw = Gateway.from_settings(settings, clock=clock)
        await gw.start()
        try:
            capped_max = 0
            while not gw.store.is_verified(SHA):
                done = gw.mirror.progress_bytes(SHA) or 0
                paused_for = clock.since("12:00:00")
                if paused_for < 0:
                    assert done == 0, f"{done} bytes stored in the paused window"
                elif clock.since("12:00:03") < 0:
                    allowed = RATE * paused_for + RATE + CHUNK_BYTES  # since the edge, one burst, one chunk
                    assert done <= allowed, f"{done} bytes {paused_for:.2f}s into a {RATE} B/s window"
                    capped_max = max(capped_max, done)
                assert clock.since("12:00:03") < 30, "the transfer did not finish once free"
                await asyncio.sleep(rng.uniform(0.005, 0.08))  # sample at random instants
            assert capped_max > 0, "nothing moved in the capped window"
            assert clock.since("12:00:03") > 0, "finished before the cap's window ended"
            await until(lambda: gw.store.is_verified(SHA), what="verified")
        finally:
            await gw.stop()
        # Held, not refetched: the paused transfer carried on on its connection (or resumed by Range).
        fetches = [line for line in upstream.access_log() if "detector-1.0.0.bin " in line]
        assert len(fetches) >= 1 and all(" 200 " in f or " 206 " in f for f in fetches), fetches

"""The reference device agent (``python -m gateway.agent``, a real process) against a hostile gateway.

The gateway here is a real aiohttp server on an ephemeral port that answers what a broken or
malicious gateway could: JSON that is not a manifest, nesting 100,000 deep, bodies of megabytes,
``Retry-After`` of ``inf``, ``nan``, ``-5`` or a date, and an artifact that never ends. The agent's
state folder is a real small file system (tmpfs) where the disk matters. It must:

- survive every poll answer, say why it waits and when it asks again, and never stop on its own;
- never write more than the manifest's ``length`` (an endless body is cut off and its partial removed);
- on a full disk: one clear message, no partial left filling it, a non-zero exit with ``--once``
  and a retry in the loop mode; never exit 0 on a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.agent.slots import Slots
from tests.conftest import Registry
from tests.gw import until
from tests.peers import ROOT, small_disk

pytestmark = pytest.mark.slow  # a long fault-injection run: SLOW_TESTS=1 runs it (a .ci/run step)

Answer = tuple[int, bytes, dict[str, str]]


@dataclass
class Hostile:
    """A gateway that answers polls from a script (the last answer repeats) and serves one artifact."""

    script: list[Answer]
    artifact: Callable[[web.Request], Any] | None = None
    polls: int = 0
    metrics: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def poll(self, _request: web.Request) -> web.Response:
        status, body, headers = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        body = body.replace(b"{url}", self.url.encode())
        if status == 200:
            headers = {"Content-Type": "application/json", **headers}
        return web.Response(status=status, body=body if status not in (204, 304) else None, headers=headers)

    async def get_artifact(self, request: web.Request) -> web.StreamResponse:
        assert self.artifact is not None
        return await self.artifact(request)  # type: ignore[no-any-return]

    async def endless_metrics_answer(self, request: web.Request) -> web.StreamResponse:
        self.metrics += 1
        r = web.StreamResponse(status=200)
        await r.prepare(request)
        while True:
            await r.write(b"x" * 65536)

    async def event(self, request: web.Request) -> web.Response:
        self.events.append(await request.json())
        return web.Response(status=204)


@asynccontextmanager
async def serving(h: Hostile) -> AsyncIterator[Hostile]:
    app = web.Application()
    app.router.add_get("/devices/{id}/updates", h.poll)
    app.router.add_post("/devices/{id}/events", h.event)
    app.router.add_post("/devices/{id}/metrics", h.endless_metrics_answer)
    app.router.add_get("/a/model.bin", h.get_artifact)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    h.url = f"http://127.0.0.1:{port}"
    try:
        yield h
    finally:
        await runner.cleanup()


@contextmanager
def agent(
    h: Hostile, reg: Registry, state: Path, logs: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    args = [sys.executable, "-m", "gateway.agent", "--service-url", h.url, "--id", "cam-1",
            "--public-key", str(reg.public_key), "--state", str(state), "--mqtt", "",
            "--model-id", "detector", "--poll-interval", "1", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (logs / "out").open("wb") as out, (logs / "err").open("wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def text(logs: Path, name: str) -> str:
    return (logs / name).read_text(errors="replace")


def manifest(length: int, sha256: str = "ab" * 32) -> dict[str, Any]:
    return {"model_id": "detector", "version": "1.0.0", "sha256": sha256, "length": length,
            "artifact_url": "{url}/a/model.bin", "signature_url": "{url}/a/model.bin.sig"}  # fmt: skip


def as_json(doc: Any) -> bytes:
    import json

    return json.dumps(doc).encode()


def used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


# -- every poll answer survived -----------------------------------------------------------------------


WAIT = {"X-OTA-Reason": "waiting_for_wave", "Retry-After": "1"}
HOSTILE_ANSWERS: list[Answer] = [
    (200, b"[1,2,3]", {}),
    (200, b"[" * 100_000 + b"]" * 100_000, {}),
    (200, b'{"model_id": 5}', {}),
    (200, b"null", {}),
    (200, b"not json {", {}),
    (200, b'"' + b"a" * 3_000_000 + b'"', {}),
    (200, as_json({**manifest(10), "length": "10"}), {}),
    (500, b"x" * 2_000_000, {}),
    (204, b"", {"Retry-After": "-5"}),
    (204, b"", {"Retry-After": "nan"}),
    (204, b"", {"Retry-After": "soon"}),
    (204, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
    (304, b"", {"Retry-After": "0"}),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_agent_survives_any_poll_answer_and_says_why_it_waits(
    seed: int, reg: Registry, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    bad = rng.sample(HOSTILE_ANSWERS, len(HOSTILE_ANSWERS))
    script = [a for answer in bad for a in (answer, (204, b"", WAIT))]  # an error's backoff resets
    script.append((204, b"", {"X-OTA-Reason": "waiting_for_wave", "Retry-After": "inf"}))
    async with serving(Hostile(script)) as h:
        with agent(h, reg, tmp_path / "state", tmp_path) as proc:
            await until(lambda: h.polls >= len(script) or proc.poll() is not None, 100, "every answer")
            await until(
                lambda: "asking again in 3600 s" in text(tmp_path, "out") or proc.poll() is not None, 10
            )
            assert proc.poll() is None, f"the agent stopped: {text(tmp_path, 'err')[-2000:]}"
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 20) == 0
    out, err = text(tmp_path, "out"), text(tmp_path, "err")
    assert h.polls == len(script)  # inf is clamped: it will ask again, in an hour at most
    assert "Traceback" not in err, err[-3000:]
    assert "no update for now (waiting_for_wave); asking again in 1 s" in out
    assert "not a manifest" in err and "nested deeper" in err and "more than the" in err
    assert len(err) < 20_000  # a 2 MB error body is not echoed


# -- every body bounded, a full disk handled -------------------------------------------------------------


def endless(chunk: bytes) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        r = web.StreamResponse(headers={"ETag": '"endless"'})
        await r.prepare(request)
        while True:
            await r.write(chunk)

    return handler


@pytest.mark.parametrize("seed", [4, 5, 6])
async def test_an_endless_body_is_cut_at_the_manifests_length(
    seed: int, reg: Registry, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    length = rng.randrange(50_000, 600_000)
    with small_disk(tmp_path / "state", "4m") as state:
        before = used(state)
        h = Hostile(
            [(200, as_json(manifest(length)), {"Retry-After": "1"})],
            endless(os.urandom(rng.randrange(1, 70_000))),
        )
        async with serving(h):
            with agent(h, reg, state, tmp_path) as proc:
                peak = 0

                def cut_twice() -> bool:
                    nonlocal peak
                    peak = max(peak, used(state) - before)
                    return (
                        text(tmp_path, "err").count("longer than the manifest's") >= 2
                        or proc.poll() is not None
                    )

                await until(cut_twice, 60, "two cut-off downloads")
                assert proc.poll() is None, f"the agent stopped: {text(tmp_path, 'err')[-2000:]}"
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.wait, 20) == 0
        assert peak <= length + (256 << 10), f"{peak} bytes written for a {length}-byte artifact"
        assert not list(state.glob("*/model.part")) or all(
            p.stat().st_size <= length for p in state.glob("*/model.part")
        )


def trickle(model: bytes, first: int, go_on: asyncio.Event) -> Callable[[web.Request], Any]:
    """The artifact: ``first`` bytes, then the rest once ``go_on`` is set."""

    async def handler(request: web.Request) -> web.StreamResponse:
        r = web.StreamResponse(headers={"ETag": '"m"', "Content-Length": str(len(model))})
        await r.prepare(request)
        await r.write(model[:first])
        await go_on.wait()
        await r.write(model[first:])
        return r

    return handler


async def test_a_full_disk_is_one_message_no_partial_and_a_failure_exit(
    reg: Registry, tmp_path: Path
) -> None:
    model = os.urandom(600_000)
    go_on = asyncio.Event()
    sha = hashlib.sha256(model).hexdigest()
    with small_disk(tmp_path / "state", "1m") as state:
        h = Hostile([(200, as_json(manifest(len(model), sha)), {})], trickle(model, 100_000, go_on))
        async with serving(h):
            once = tmp_path / "once"
            once.mkdir()
            with agent(h, reg, state, once, "--once") as proc:
                await until(lambda: any(p.stat().st_size >= 100_000 for p in state.glob("*/model.part")), 30)
                st = os.statvfs(state)  # the disk fills up under the running download
                filler = state / "filler"
                with filler.open("wb") as f:
                    f.write(b"\0" * (st.f_bavail * st.f_frsize - 4096))
                go_on.set()
                code = await asyncio.to_thread(proc.wait, 30)
        err = text(once, "err")
        assert code != 0 and "Traceback" not in err, err[-3000:]
        assert "no room" in err and "cannot reach" not in err and len(err.strip().splitlines()) == 1, err
        assert not list(state.glob("*/model.part")), "the partial is left filling the disk"

        # An artifact larger than the disk is refused before a byte is written; the loop retries.
        filler.unlink()
        before = used(state)
        big = [(200, as_json(manifest(3_000_000, sha)), {"Retry-After": "1"})]
        h = Hostile(big, endless(b"x" * 65536))
        async with serving(h):
            with agent(h, reg, state, tmp_path) as proc:
                await until(
                    lambda: text(tmp_path, "err").count("no room") >= 2 or proc.poll() is not None, 30
                )
                assert proc.poll() is None, f"the agent stopped: {text(tmp_path, 'err')[-2000:]}"
                assert used(state) - before < 64 << 10
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.wait, 20) == 0


async def test_an_endless_answer_to_metrics_does_not_stop_the_reports(reg: Registry, tmp_path: Path) -> None:
    """A device with a model reports metrics; the gateway answers each post with a body that never ends."""
    state = tmp_path / "state"
    slots = Slots.open(state)
    partial, _ = slots.prepare("ab" * 32)
    partial.write_bytes(b"model")
    slots.commit("detector", "1.0.0", "ab" * 32)
    slots.switch()
    h = Hostile([(204, b"", {"Retry-After": "1"})])
    async with serving(h):
        with agent(h, reg, state, tmp_path, "--simulate", "--metrics-interval", "0.2") as proc:
            await until(lambda: h.metrics >= 3 or proc.poll() is not None, 20, "three metrics reports")
            assert proc.poll() is None, text(tmp_path, "err")[-2000:]

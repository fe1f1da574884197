"""Fuzz the real servers from outside: hostile HTTP to the device and operator APIs, hostile MQTT
byte streams to the embedded broker.

One real gateway (``tests/gw.py``: its HTTP servers and broker on ephemeral loopback ports, a real
registry folder upstream, ``devices.access = "token"`` so the MQTT side takes devices too) runs in
its own thread and event loop for the whole module, so Hypothesis drives it from the test thread
example after example. Every example checks: no 5xx, and no traceback logged by the gateway or
aiohttp (a handler that failed after its answer began, or the broker's "unexpected error" path).
Afterwards the gateway must still answer a normal poll, and the broker must still take a good
client (``mosquitto_pub``) while a client connected before the fuzzing is still served.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import pytest
import yarl
from aiohttp import http_exceptions
from hypothesis import example, given
from hypothesis import strategies as st

from gateway import registry
from gateway.broker import wire
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.fuzz.profile import FUZZ_SERVER
from tests.fuzz.strategies import (
    CONNECT_BODY,
    EVENT,
    METRICS,
    SUBSCRIBE_BODY,
    UNSUBSCRIBE_BODY,
    conditional_headers,
    junk,
    metrics_payloads,
    mutated,
    query_keys,
    query_values,
    spliced_bytes,
    to_json,
)
from tests.gw import gateway_settings, running, until
from tests.peers import need

T = TypeVar("T")
# The gateway under test runs in another thread and draws from the global ``random`` (poll jitter,
# retry pacing) while Hypothesis generates an example; Hypothesis reads the changed global state
# as "a strategy used random". No strategy here does.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
MODEL = os.urandom(20_000)
SHA = hashlib.sha256(MODEL).hexdigest()
OPERATOR_TOKEN = "operator-secret-token"
OPERATOR_AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
TOKENS = {"cam-1": "token-of-cam-1", "cam-2": "token-of-cam-2", "cam-3": "token-of-cam-3"}
ARTIFACT = "/artifacts/detector/1.0.0/detector-1.0.0.bin"
READ_TIMEOUT_S = 10.0
ANSWER_WAIT_S = 0.5


class Tracebacks(logging.Handler):
    """Collects every record logged with a traceback (exc_info): a crash caught by a last resort.

    Not counted as crashes: aiohttp's own "Error handling request" for a request its parser refused
    (``HttpProcessingError`` with a 4xx code), which it answers with that 4xx; they are counted in
    ``parser_refusals`` (aiohttp logs them at ERROR with a traceback, one per bad request).
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.parser_refusals = 0

    def emit(self, record: logging.LogRecord) -> None:
        if not record.exc_info:
            return
        exc = record.exc_info[1]
        if isinstance(exc, http_exceptions.HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            self.parser_refusals += 1
            return
        self.records.append(record)

    def take(self) -> list[str]:
        out = [f"{r.name}: {r.getMessage()}: {r.exc_info[1]!r}" for r in self.records if r.exc_info]
        self.records.clear()
        return out


class GatewayThread:
    """A real gateway in its own thread and event loop, called into from the test thread."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.gw: Gateway | None = None
        self.session: aiohttp.ClientSession | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, name="fuzz-gateway", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except BaseException as exc:  # reported to the test thread by start()/stop()
            self.error = exc
            self.ready.set()

    async def _amain(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running(self.settings) as gw, aiohttp.ClientSession() as session:
            self.gw, self.session = gw, session
            self.ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(60), "the gateway did not start"
        if self.error is not None:
            raise self.error

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(60)
        if self.error is not None:
            raise self.error

    @property
    def gateway(self) -> Gateway:
        assert self.gw is not None
        return self.gw

    def http(self) -> tuple[str, int]:
        host, port = self.gateway.http_addresses[0][:2]
        return host, port

    def operator(self) -> tuple[str, int]:
        host, port = self.gateway.operator_addresses[0][:2]
        return host, port

    def mqtt(self) -> tuple[str, int]:
        assert self.gateway.broker is not None
        return self.gateway.broker.addresses["tcp"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayThread, Tracebacks]]:
    tmp = tmp_path_factory.mktemp("fuzz-site")
    registry.keygen(tmp / "keys")
    (tmp / "registry").mkdir()
    reg = Registry(tmp / "registry", tmp / "keys")
    reg.publish(MODEL)
    tokens = tmp / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    settings = gateway_settings(
        reg,
        tmp / "data",
        devices={"access": "token", "tokens_file": str(tokens), "max_wait_s": 0.5},
        mqtt={"max_packet_bytes": 4096, "connect_timeout_s": 2.0},
        telemetry={"window_s": 1.0},
        operator={"token": OPERATOR_TOKEN},
    )
    tracebacks = Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    gt = GatewayThread(settings)
    try:
        gt.start()
        gt.call(until(lambda: gt.gateway.store.is_verified(SHA), what="the model mirrored"))
        yield gt, tracebacks
    finally:
        logging.getLogger().removeHandler(tracebacks)
        gt.stop()


def gateway_of(site: tuple[GatewayThread, Tracebacks]) -> GatewayThread:
    return site[0]


# -- HTTP: what a device or a browser could send --------------------------------------------------


async def raw_http_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` and read the answer's head. A server still waiting for more (a body shorter
    than its Content-Length) gets the end of the stream after ``ANSWER_WAIT_S``: not sooner,
    because aiohttp drops its answer to a client that half-closed before it was written."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANSWER_WAIT_S):
                while b"\r\n\r\n" not in out:
                    if not (chunk := await reader.read(65536)):
                        return out
                    out += chunk
        if out:
            return out
        writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(READ_TIMEOUT_S):
                while chunk := await reader.read(65536):
                    out += chunk
        return out
    except ConnectionError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def raw_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data``, half-close, and read what comes back until the server closes (MQTT)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(READ_TIMEOUT_S):
                while chunk := await reader.read(65536):
                    out += chunk
        return out
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def statuses(response: bytes) -> list[int]:
    """The status codes of every response in ``response`` (pipelined answers included)."""
    found = []
    for line in response.split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit() and len(parts[1]) == 3:
            found.append(int(parts[1]))
    return found


def printable_latin1(text: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E or c == "\t" or 0xA0 <= ord(c) <= 0xFF for c in text)


device_ids = st.one_of(
    st.just("cam-1"),
    st.just("cam-1"),
    st.sampled_from(["cam-2", "..", ".x", "a" * 200, "cam-1\n"]),
    st.text(max_size=12),
)
bearer = st.one_of(
    st.just("Bearer token-of-cam-1"),
    st.just("Bearer token-of-cam-1"),
    st.sampled_from(
        [
            "Bearer token-of-cam-2",
            "Bearer ",
            "bearer token-of-cam-1",
            "Basic dG9rLTE=",
            "Bearer token-of-cam-1\x00",
            "",
        ]
    ),
    st.text(max_size=20),
)
query_strings = st.one_of(
    st.lists(st.tuples(query_keys, query_values), max_size=4).map(lambda pairs: "?" + urlencode(pairs)),
    st.sampled_from(
        ["?wait=0.1", "?wait=nan", "?wait=1e400", "?fw=%ZZ", "?%00=1", "?fw", "?=", "?fw=1&fw=2", ""]
    ),
    st.text(max_size=30).map(lambda s: "?" + quote(s, safe="=&%+")),
)
device_paths = st.one_of(
    st.builds(lambda d, q: f"/devices/{quote(d, safe='')}/updates{q}", device_ids, query_strings),
    st.builds(
        lambda d, k: f"/devices/{quote(d, safe='')}/{k}", device_ids, st.sampled_from(["metrics", "events"])
    ),
    st.just(ARTIFACT),
    st.sampled_from(
        [
            ARTIFACT,
            ARTIFACT + ".sig",
            "/artifacts/detector/1.0.0/other.bin",
            "/artifacts/detector/..%2F/x",
            "/artifacts/%2e%2e/%2e%2e/etc",
            "/healthz",
            "/index.json",
            "/sites/test-site/index.json",
            "/sites/%00/index.json",
            "/keys.json",
            "/devices//updates",
        ]
    ),
    st.text(max_size=20).map(lambda s: "/" + quote(s, safe="/%")),
)
bodies = st.one_of(
    metrics_payloads.map(lambda p: p if isinstance(p, bytes) else to_json(p)),
    st.one_of(mutated(EVENT), junk).map(to_json),
    st.binary(max_size=40),
)


@st.composite
def device_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None]:
    path = draw(device_paths)
    natural = "POST" if path.endswith(("/metrics", "/events")) else "GET"
    method = (
        natural
        if draw(st.integers(0, 4))
        else draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE"]))
    )
    headers = {k: v for k, v in draw(conditional_headers).items() if printable_latin1(v)}
    auth = draw(bearer)
    if printable_latin1(auth):
        headers["Authorization"] = auth
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1", "x"])
        )
    body = draw(bodies) if method in ("POST", "PUT") or not draw(st.integers(0, 4)) else None
    return method, path, headers, body


async def http_request(
    gt: GatewayThread,
    address: tuple[str, int],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
) -> int:
    assert gt.session is not None
    url = yarl.URL(f"http://{address[0]}:{address[1]}{path}", encoded=True)
    async with gt.session.request(
        method, url, headers=headers, data=body, allow_redirects=False, timeout=aiohttp.ClientTimeout(30)
    ) as r:
        await r.read()
        return r.status


def check_answered(site: tuple[GatewayThread, Tracebacks], codes: list[int], what: object) -> None:
    assert all(code < 500 for code in codes), (codes, what)
    assert not (tb := site[1].take()), (tb, what)


@FUZZ_SERVER
@given(request=device_requests())
@example(
    request=(
        "POST",
        "/devices/cam-1/metrics",
        {"Authorization": "Bearer token-of-cam-1"},
        b'{"model_version":"1","cpu_percent":1' + b"0" * 400 + b"}",
    )
)
@example(request=("GET", "/devices/cam-1%0A/updates", {"Authorization": "Bearer token-of-cam-1"}, None))
def test_device_api(cases: Counter[str], site: tuple[GatewayThread, Tracebacks], request: Any) -> None:
    cases["http.device_api (aiohttp client)"] += 1
    gt = gateway_of(site)
    method, path, headers, body = request
    status = gt.call(http_request(gt, gt.http(), method, path, headers, body))
    cases[f"http.device_api -> {status}"] += 1
    check_answered(site, [status], request)


# Raw requests: what no well-behaved client library would send.
methods = st.one_of(
    st.sampled_from([b"GET", b"POST", b"HEAD", b"get", b"G\x00T", b"", b"CONNECT", b"PRI"]),
    st.binary(max_size=6),
)
targets = st.one_of(
    st.just(b"/devices/cam-1/updates?fw=1.2.0"),
    st.just(ARTIFACT.encode()),
    st.sampled_from(
        [
            b"/devices/cam-1/updates",
            b"/devices/cam-1/metrics",
            ARTIFACT.encode(),
            b"*",
            b"http://x/healthz",
            b"/\xff\xfe",
            b"",
        ]
    ),
    st.binary(max_size=30),
)
versions = st.one_of(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/01.1", b""]),
    st.binary(max_size=8),
)
header_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"Host: x",
                b"Authorization: Bearer token-of-cam-1",
                b"Authorization: Bearer operator-secret-token",
                b"Content-Length: 5",
                b"Content-Length: -1",
                b"Content-Length: 99999999999999999999",
                b"Content-Length: 1, 2",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: gzip, chunked",
                b"Range: bytes=0-10",
                b"Range: bytes=\xff-",
                b" folded: continuation",
                b"NoColon",
                b": empty-name",
                b"X: \x00",
                b"Expect: 100-continue",
                b"Connection: upgrade",
                b"Upgrade: websocket",
            ]
        ),
        st.sampled_from([b"Content-Length: 0", b"Content-Type: application/json", b"Range: bytes=-5"]),
        st.tuples(st.binary(max_size=10), st.binary(max_size=20)).map(lambda kv: kv[0] + b": " + kv[1]),
    ),
    max_size=6,
)
raw_bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=40),
    st.just(b"5\r\nhello\r\n0\r\n\r\n"),
    st.just(b"zz\r\nxx\r\n"),
    metrics_payloads.map(lambda p: p if isinstance(p, bytes) else to_json(p)),
)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)):
        line = draw(st.sampled_from([b"GET", b"POST", b"HEAD"])) + b" " + draw(targets) + b" HTTP/1.1"
    else:
        line = draw(methods) + b" " + draw(targets) + b" " + draw(versions)
    lines = [line, *draw(header_lines)]
    if draw(st.integers(0, 3)):
        lines.insert(1, b"Host: 127.0.0.1")
    request = b"\r\n".join(lines) + b"\r\n\r\n" + draw(raw_bodies)
    return draw(spliced_bytes(st.just(request))) if draw(st.booleans()) else request


@FUZZ_SERVER
@given(data=raw_requests(), operator=st.booleans())
@example(
    data=b"POST /devices/cam-1/metrics HTTP/1.1\r\nAuthorization: Bearer token-of-cam-1\r\nContent-Length: 50\r\n\r\n{",
    operator=False,
)
@example(data=b"POST /gates/x/hold HTTP/1.1\r\nContent-Length: 40\r\n\r\n{", operator=True)
def test_raw_http(
    cases: Counter[str], site: tuple[GatewayThread, Tracebacks], data: bytes, operator: bool
) -> None:
    cases["http.raw_request (device and operator)"] += 1
    gt = gateway_of(site)
    response = gt.call(raw_http_exchange(gt.operator() if operator else gt.http(), data))
    codes = statuses(response)
    cases[f"http.raw_request -> {codes[0] if codes else 'closed, no answer'}"] += 1
    check_answered(site, codes, data)


# -- operator API bodies (gateway/http/operator.py) ------------------------------------------------

operator_bodies = st.one_of(
    mutated({"who": "fuzz", "why": "testing"}).map(to_json),
    junk.map(to_json),
    st.binary(max_size=30),
    st.just(b""),
)


operator_auth = st.one_of(
    st.just(f"Bearer {OPERATOR_TOKEN}"),
    st.just(f"Bearer {OPERATOR_TOKEN}"),
    st.just(f"Bearer {OPERATOR_TOKEN}"),
    st.just("Basic " + base64.b64encode(f"admin:{OPERATOR_TOKEN}".encode()).decode()),
    st.sampled_from(["Basic é", "Basic gA==", "Basic !!", "Bearer", "Bearer wrong", ""]),
    st.text(max_size=20),
)


@st.composite
def operator_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None]:
    deployment = draw(
        st.sampled_from(["detector@1.0.0", "detector@9.9.9", "x", "%00", "a@b@c"])
        | st.text(max_size=10).map(lambda s: quote(s, safe=""))
    )
    action = draw(st.sampled_from(["hold", "release", "hold", "release", "abort", "explode", ""]))
    method, path = draw(
        st.sampled_from(
            [
                ("POST", f"/gates/{deployment}/{action}"),
                ("POST", f"/gates/{deployment}/{action}"),
                ("GET", "/"),
                ("GET", "/status"),
                ("GET", "/devices"),
                ("GET", "/gates"),
                ("POST", "/cache/verify"),
                ("POST", "/cache/prune"),
                ("DELETE", "/status"),
            ]
        )
    )
    headers = {}
    auth = draw(operator_auth)
    if printable_latin1(auth):
        headers["Authorization"] = auth
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(
                [
                    "application/json",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                ]
            )
        )
    if draw(st.booleans()):
        headers["Origin"] = draw(st.sampled_from(["http://evil.example", "null", "http://127.0.0.1"]))
    return method, path, headers, draw(operator_bodies) if method == "POST" else None


@FUZZ_SERVER
@given(request=operator_requests())
@example(
    request=(
        "POST",
        "/gates/detector@1.0.0/hold",
        {**OPERATOR_AUTH, "Content-Type": "application/json"},
        b"[1]",
    )
)
@example(
    request=(
        "POST",
        "/gates/detector@1.0.0/hold",
        {**OPERATOR_AUTH, "Content-Type": "application/json"},
        b'"why"',
    )
)
@example(request=("GET", "/status", {"Authorization": "Basic é"}, None))
def test_operator_api(cases: Counter[str], site: tuple[GatewayThread, Tracebacks], request: Any) -> None:
    cases["http.operator_api"] += 1
    gt = gateway_of(site)
    status = gt.call(http_request(gt, gt.operator(), *request))
    cases[f"http.operator_api -> {status}"] += 1
    check_answered(site, [status], request)


def test_http_still_answers_after_fuzzing(site: tuple[GatewayThread, Tracebacks]) -> None:
    """Runs after the fuzz tests above (file order): a normal poll, download and status still work."""
    gt = gateway_of(site)
    auth = {"Authorization": "Bearer token-of-cam-1"}
    assert gt.call(
        http_request(gt, gt.http(), "GET", "/devices/cam-1/updates?fw=1.2.0&hw=rev2", auth, None)
    ) in (200, 204)
    assert gt.call(http_request(gt, gt.http(), "GET", ARTIFACT, {**auth, "Range": "bytes=0-9"}, None)) == 206
    assert gt.call(http_request(gt, gt.operator(), "GET", "/status", OPERATOR_AUTH, None)) == 200
    assert not site[1].take()


# -- MQTT byte streams to the embedded broker (gateway/broker/wire.py, connection.py) ---------------


def connect_packet(client_id: bytes, user: bytes, password: bytes, keep_alive: int = 60) -> bytes:
    body = (
        _s(b"MQTT")
        + bytes((4, 0xC2))
        + keep_alive.to_bytes(2, "big")
        + _s(client_id)
        + _s(user)
        + _s(password)
    )
    return bytes((wire.CONNECT << 4,)) + wire.encode_remaining_length(len(body)) + body


def _s(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


GOOD_CONNECT = connect_packet(b"cam-1-fuzz", b"cam-1", b"token-of-cam-1")
mqtt_topics = st.one_of(
    st.just(b"devices/cam-1/metrics"),
    st.just(b"devices/cam-1/events"),
    st.sampled_from(
        [
            b"devices/cam-1/metrics",
            b"devices/cam-1/events",
            b"devices/cam-1/other",
            b"devices/cam-2/metrics",
            b"devices/cam-1/+",
            b"$SYS/x",
            b"",
        ]
    ),
    st.binary(max_size=20),
)
mqtt_payloads = st.one_of(
    metrics_payloads.map(lambda p: p if isinstance(p, bytes) else to_json(p)),
    st.one_of(mutated(EVENT), junk).map(to_json),
    st.binary(max_size=40),
)


@st.composite
def mqtt_bodies(draw: st.DrawFn, ptype: int, flags: int) -> bytes:
    if ptype == wire.PUBLISH:
        topic = draw(mqtt_topics)
        body = _s(topic) + (draw(st.integers(0, 0xFFFF)).to_bytes(2, "big") if flags & 6 else b"")
        return body + draw(mqtt_payloads)
    if ptype == wire.SUBSCRIBE:
        return draw(spliced_bytes(st.just(SUBSCRIBE_BODY)))
    if ptype == wire.UNSUBSCRIBE:
        return draw(spliced_bytes(st.just(UNSUBSCRIBE_BODY)))
    if ptype == wire.CONNECT:
        return draw(spliced_bytes(st.just(CONNECT_BODY)))
    if ptype in (wire.PUBACK, wire.PUBREC, wire.PUBREL, wire.PUBCOMP):
        return (
            draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
            if draw(st.booleans())
            else draw(st.binary(max_size=4))
        )
    return b"" if draw(st.booleans()) else draw(st.binary(max_size=8))


@st.composite
def mqtt_packets(draw: st.DrawFn) -> bytes:
    ptype = draw(
        st.sampled_from(
            [
                wire.PUBLISH,
                wire.PUBLISH,
                wire.PUBLISH,
                wire.SUBSCRIBE,
                wire.UNSUBSCRIBE,
                wire.PUBACK,
                wire.PUBREL,
                wire.PINGREQ,
                wire.DISCONNECT,
                wire.CONNECT,
            ]
        )
    )
    if draw(st.integers(0, 4)) == 0:
        ptype = draw(st.integers(0, 15))
    flags = (
        draw(st.sampled_from([0, 2, 2, 4, 1, 3, 8]) | st.integers(0, 15))
        if ptype == wire.PUBLISH
        else wire.CLIENT_FLAGS.get(ptype, 0)
    )
    if draw(st.integers(0, 7)) == 0:
        flags = draw(st.integers(0, 15))
    body = draw(mqtt_bodies(ptype, flags))
    length = wire.encode_remaining_length(len(body))
    if draw(st.integers(0, 4)) == 0:
        length = draw(
            st.one_of(
                st.integers(0, 268_435_455).map(wire.encode_remaining_length),
                st.sampled_from(
                    [b"\xff\xff\xff\xff\x7f", b"\x80\x80\x80\x80", b"\x80\x00", b"\xff\xff\xff\x7f"]
                ),
            )
        )
    return bytes((ptype << 4 | flags,)) + length + body


@st.composite
def mqtt_streams(draw: st.DrawFn) -> bytes:
    start = draw(st.sampled_from(["good", "good", "good", "mutated", "none"]))
    stream = {"good": GOOD_CONNECT, "none": b""}.get(start) or draw(spliced_bytes(st.just(GOOD_CONNECT)))
    for packet in draw(
        st.lists(st.one_of(*[mqtt_packets()] * 4, st.binary(min_size=1, max_size=12)), max_size=5)
    ):
        stream += packet
    return stream


def publish_packet(topic: bytes, payload: bytes, packet_id: int = 1) -> bytes:
    body = _s(topic) + packet_id.to_bytes(2, "big") + payload
    return bytes((wire.PUBLISH << 4 | 2,)) + wire.encode_remaining_length(len(body)) + body


async def broker_stats(gt: GatewayThread) -> dict[str, int]:
    assert gt.gateway.broker is not None
    return gt.gateway.broker.stats()


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture(scope="module")
def bystander(site: tuple[GatewayThread, Tracebacks]) -> Iterator[socket.socket]:
    """A device connected before the fuzzing (keep-alive 0, so never swept), served after it."""
    sock = socket.create_connection(gateway_of(site).mqtt(), timeout=READ_TIMEOUT_S)
    try:
        sock.sendall(connect_packet(b"cam-2-bystander", b"cam-2", b"token-of-cam-2", keep_alive=0))
        assert read_exactly(sock, 4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
        yield sock
    finally:
        sock.close()


HUGE_METRIC = b'{"model_version":"1.0.0","cpu_percent":1' + b"0" * 400 + b"}"


@FUZZ_SERVER
@given(stream=mqtt_streams())
@example(stream=GOOD_CONNECT + publish_packet(b"devices/cam-1/metrics", HUGE_METRIC))
def test_mqtt_streams(
    cases: Counter[str], site: tuple[GatewayThread, Tracebacks], bystander: socket.socket, stream: bytes
) -> None:
    cases["mqtt.byte_stream"] += 1
    gt = gateway_of(site)
    gt.call(raw_exchange(gt.mqtt(), stream))
    assert not (tb := site[1].take()), (tb, stream)
    assert gt.call(broker_stats(gt)).get("internal_errors", 0) == 0, stream


def test_broker_still_serves_after_fuzzing(
    cases: Counter[str], site: tuple[GatewayThread, Tracebacks], bystander: socket.socket
) -> None:
    """Runs after the stream fuzzing (file order): the bystander is still served, and a new client
    (the real mosquitto_pub) connects and has a metric acknowledged."""
    gt = gateway_of(site)
    bystander.sendall(bytes((wire.PINGREQ << 4, 0)))
    assert read_exactly(bystander, 2) == wire.PINGRESP_BYTES
    host, port = gt.mqtt()
    metric = json.dumps({**METRICS, "device_id": "cam-3"})
    cmd = [need("mosquitto_pub"), "-h", host, "-p", str(port), "-i", "cam-3", "-u", "cam-3", "-P", "token-of-cam-3",
           "-q", "1", "-t", "devices/cam-3/metrics", "-m", metric]  # fmt: skip
    before = gt.call(broker_stats(gt))["published"]
    done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    after = gt.call(broker_stats(gt))
    assert after["published"] == before + 1
    assert not site[1].take()
    for name in (
        "accepted",
        "refused",
        "malformed",
        "oversized",
        "published",
        "publish_refused",
        "subscribe_refused",
    ):
        cases[f"mqtt.byte_stream -> broker {name}"] = after.get(name, 0)
    cases["http.raw_request -> 4xx logged by aiohttp with a traceback"] = site[1].parser_refusals

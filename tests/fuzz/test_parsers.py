"""Fuzz every pure parser that meets the network: only its documented errors escape, and what it
accepts obeys the module's invariants (a planned range lies in the file, an accepted id is an id,
a parsed version keeps its order, a printed cohort parses back to itself).

Each test counts its cases (``cases[...]``); the session prints the totals ("fuzz cases run").
Findings are pinned as ``@example``s next to the strategy that found them.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from amqtt.adapters import BufferReader
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from hypothesis import example, given
from hypothesis import strategies as st
from multidict import MultiDict

from firmware_compat import CompatMatrix, FirmwareRange, MatrixError, VersionError, parse_version
from gateway import registry
from gateway.broker import wire
from gateway.core.cohort import CohortSyntaxError, parse_cohort
from gateway.core.errors import FormatError, RemoteDataError
from gateway.core.manifest import parse_deployment, parse_time
from gateway.core.metrics import parse_metrics
from gateway.discovery.txt import MAX_TXT_KEYS, device_attrs, encode_txt, parse_txt
from gateway.http.devices import bearer_of
from gateway.http.operator import _presented_token
from gateway.http.polling import MAX_QUERY_PARAMS, poll_attributes, wait_of
from gateway.http.ranges import MAX_RANGES, parse_byte_ranges, plan
from gateway.telemetry.ingest import parse_event
from gateway.trust.canonical import canonical_json
from gateway.trust.index import TrustedIndex
from gateway.trust.keys import keyid, load_trusted_keys, parse_public_key, public_pem
from tests.fuzz.profile import FUZZ
from tests.fuzz.strategies import (
    CONNECT_BODY,
    EVENT,
    METRICS,
    MTIME,
    SUBSCRIBE_BODY,
    TAG,
    UNSUBSCRIBE_BODY,
    conditional_headers,
    junk,
    metrics_payloads,
    mutated,
    query_keys,
    query_values,
    range_headers,
    sizes,
    spliced,
    spliced_bytes,
    to_json,
)

NOW = time.time()
# What an accepted id must be: the documented alphabet, the whole string (no trailing newline).
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
SHA = re.compile(r"[0-9a-f]{64}")


def is_id(value: object) -> bool:
    return isinstance(value, str) and ID.fullmatch(value) is not None and ".." not in value


# -- Range headers (gateway/http/ranges.py) -----------------------------------------------------


@FUZZ
@given(value=range_headers, size=sizes)
@example(value="bytes=0-0,-1", size=0)
@example(value="bytes=" + "9" * 40 + "-", size=10)
def test_range_header(cases: Counter[str], value: str, size: int) -> None:
    cases["http.ranges.parse_byte_ranges"] += 1
    got = parse_byte_ranges(value, size)
    if isinstance(got, str):
        return
    cases["http.ranges.parse_byte_ranges -> accepted"] += 1
    assert len(got) <= MAX_RANGES
    for r in got:
        assert 0 <= r.first <= r.last < size, (value, size, got)
    for a, b in pairwise(got):
        assert a.last + 1 < b.first, ("not coalesced", value, got)


@FUZZ
@given(method=st.sampled_from(["GET", "HEAD"]), headers=conditional_headers, size=sizes)
def test_conditional_plan(cases: Counter[str], method: str, headers: dict[str, str], size: int) -> None:
    cases["http.ranges.plan"] += 1
    got = plan(method, headers, size=size, etag=TAG, last_modified=MTIME)
    assert got.status in (200, 206, 304, 412, 416)
    if got.status == 206:
        assert got.ranges and all(0 <= r.first <= r.last < size for r in got.ranges)
    if got.status == 416:
        assert "Range" in headers


# -- poll query attributes (gateway/http/polling.py) --------------------------------------------


@FUZZ
@given(
    pairs=st.lists(st.tuples(query_keys, query_values), max_size=3)
    | st.lists(st.tuples(st.sampled_from(["fw", "hw", "region", "wait"]), query_values), max_size=4)
    | st.lists(st.tuples(query_keys, query_values), max_size=MAX_QUERY_PARAMS + 3)
)
@example(pairs=[("fw\n", "1.0")])
@example(pairs=[("model_id", "detector\n")])
def test_poll_attributes(cases: Counter[str], pairs: list[tuple[str, str]]) -> None:
    cases["http.polling.poll_attributes"] += 1
    try:
        attrs = poll_attributes(MultiDict(pairs))
    except web.HTTPBadRequest:
        return
    cases["http.polling.poll_attributes -> accepted"] += 1
    for key, value in attrs.items():
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}", key), key
        assert key != "wait" and len(value) <= 128 and value.isprintable()
    for key in ("model_id", "model_version"):
        assert key not in attrs or is_id(attrs[key])


@FUZZ
@given(
    raw=st.one_of(
        st.sampled_from(["5", "0", "-1", "nan", "inf", "1e400", "1_0", "0x10", " 3 ", "١", "", "\x00"]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=20),
    )
)
def test_wait_of(cases: Counter[str], raw: str) -> None:
    cases["http.polling.wait_of"] += 1
    request = make_mocked_request("GET", "/devices/d/updates?" + urlencode([("wait", raw)]))
    try:
        value = wait_of(request.query, 30.0)
    except web.HTTPBadRequest:
        return
    assert math.isfinite(value) and 0 <= value <= 30.0


# -- metrics and event JSON (gateway/telemetry/schema.py, ingest.parse_event) ---------------------


@FUZZ
@given(payload=metrics_payloads)
@example(payload={**METRICS, "cpu_percent": 10**400})
@example(payload=to_json({**METRICS, "uptime_seconds": 10**400}))
@example(payload={**METRICS, "model_version": "1.0.0\n"})
def test_metrics(cases: Counter[str], payload: Any) -> None:
    cases["telemetry.parse_metrics"] += 1
    try:
        s = parse_metrics("cam-1", payload, NOW)
    except FormatError:
        return
    cases["telemetry.parse_metrics -> accepted"] += 1
    assert is_id(s.model_version) and (s.model_id == "" or is_id(s.model_id))
    assert 0 <= s.errors <= s.inferences
    for value in (s.latency_ms, s.cpu_percent, s.ram_percent, s.temperature_c, s.mean_confidence, s.uptime_s):
        assert value is None or math.isfinite(value)
    assert all(isinstance(n, int) and n >= 0 for n in s.class_counts.values())


@FUZZ
@given(doc=st.one_of(mutated(EVENT), junk))
@example(doc={"event": ["healthy"]})
def test_event(cases: Counter[str], doc: Any) -> None:
    cases["telemetry.parse_event"] += 1
    try:
        name, model_id, version, reason = parse_event(doc)
    except FormatError:
        return
    cases["telemetry.parse_event -> accepted"] += 1
    assert name in ("downloaded", "verified", "activated", "healthy", "rolled_back", "failed")
    assert model_id is None or is_id(model_id)
    assert version is None or is_id(version)
    assert reason is None or (isinstance(reason, str) and len(reason) <= 1024)


# -- MQTT packets (gateway/broker/wire.py, and amqtt's codecs as the connection uses them) ---------


@FUZZ
@given(data=st.binary(max_size=6))
def test_remaining_length(cases: Counter[str], data: bytes) -> None:
    cases["mqtt.wire.remaining_length"] += 1
    try:
        value, used = wire.decode_remaining_length(data)
    except wire.MalformedPacket:
        return
    assert 1 <= used <= 4 and 0 <= value < 128**4
    assert wire.decode_remaining_length(wire.encode_remaining_length(value)) == (
        value,
        len(wire.encode_remaining_length(value)),
    )


topic_bytes = st.one_of(
    st.sampled_from([b"devices/cam-1/metrics", b"devices/cam-1/#", b"", b"\x00", b"\xff\xfe", b"a/\x00/b"]),
    st.text(max_size=20).map(str.encode),
    st.binary(max_size=20),
)


@st.composite
def publish_bodies(draw: st.DrawFn) -> bytes:
    topic = draw(topic_bytes)
    length = draw(st.one_of(st.just(len(topic)), st.integers(0, 0xFFFF)))
    body = length.to_bytes(2, "big") + topic
    if draw(st.booleans()):
        body += draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    return body + draw(st.binary(max_size=16))


@FUZZ
@given(flags=st.integers(0, 15), body=st.one_of(publish_bodies(), st.binary(max_size=24)))
@example(flags=2, body=b"\x00\x01a")
@example(flags=6, body=b"\x00\x00\x00\x01")
def test_publish(cases: Counter[str], flags: int, body: bytes) -> None:
    cases["mqtt.wire.parse_publish"] += 1
    try:
        p = wire.parse_publish(flags, body)
    except wire.MalformedPacket:
        return
    cases["mqtt.wire.parse_publish -> accepted"] += 1
    assert p.qos in (0, 1, 2) and (p.packet_id is None) == (p.qos == 0)
    assert p.packet_id is None or 0 < p.packet_id <= 0xFFFF
    assert "\x00" not in p.topic and p.retain == bool(flags & 1) and p.dup == bool(flags & 8)


@FUZZ
@given(ptype=st.integers(0, 15), flags=st.integers(0, 15), body=st.binary(max_size=4))
def test_flags_and_packet_ids(cases: Counter[str], ptype: int, flags: int, body: bytes) -> None:
    cases["mqtt.wire.check_flags+parse_packet_id"] += 1
    try:
        wire.check_flags(ptype, flags)
    except wire.MalformedPacket:
        pass
    try:
        assert 0 <= wire.parse_packet_id(body) <= 0xFFFF
    except wire.MalformedPacket:
        pass


# The exceptions Connection translates into MalformedPacket around amqtt's decoders; anything else
# reaches its last-resort handler ("unexpected error", counted as internal_errors): a crash here.
AMQTT_DECODE_ERRORS = (
    AMQTTError,
    MQTTError,
    NoDataError,
    ValueError,
    IndexError,
    asyncio.IncompleteReadError,
)
DECODERS = {
    wire.CONNECT: (ConnectPacket, CONNECT_BODY),
    wire.SUBSCRIBE: (SubscribePacket, SUBSCRIBE_BODY),
    wire.UNSUBSCRIBE: (UnsubscribePacket, UNSUBSCRIBE_BODY),
}


@FUZZ
@given(
    ptype=st.sampled_from(sorted(DECODERS)),
    data=st.data(),
)
def test_amqtt_decoders(cases: Counter[str], ptype: int, data: st.DataObject) -> None:
    cls, valid = DECODERS[ptype]
    cases[f"mqtt.amqtt.{cls.__name__}"] += 1
    body = data.draw(st.one_of(spliced_bytes(st.just(valid)), st.binary(max_size=40)))
    header = MQTTFixedHeader(ptype, wire.CLIENT_FLAGS[ptype], len(body))

    async def decode() -> None:
        await cls.from_stream(BufferReader(body), fixed_header=header)

    try:
        asyncio.run(decode())
    except AMQTT_DECODE_ERRORS:
        pass


# -- TXT records (gateway/discovery/txt.py) -----------------------------------------------------

txt_keys = st.one_of(
    st.sampled_from(
        ["id", "hw", "fw", "model", "model_version", "txtvers", "ID", "line", "a\n", "", "=", "k\x7f"]
    ),
    st.text(max_size=10),
)
txt_items = st.one_of(
    st.tuples(
        st.sampled_from(["id", "hw", "fw", "model", "model_version"]),
        st.sampled_from(["cam-1", "1.0.0", "rev2"]),
    ).map(lambda kv: f"{kv[0]}={kv[1]}".encode()),
    st.tuples(txt_keys, st.none() | st.text(max_size=140) | st.sampled_from(["cam-1", "1.0.0", "a\n"])).map(
        lambda kv: (kv[0] if kv[1] is None else f"{kv[0]}={kv[1]}").encode("utf-8", "surrogatepass")
    ),
    st.binary(max_size=20),
)


@st.composite
def txt_records(draw: st.DrawFn) -> bytes:
    out = bytearray()
    for item in draw(st.lists(txt_items, max_size=4) | st.lists(txt_items, max_size=MAX_TXT_KEYS + 3)):
        item = item[:255]
        out.append(len(item) if draw(st.integers(0, 9)) else draw(st.integers(0, 255)))
        out += item
    return bytes(out)


@FUZZ
@given(text=st.one_of(txt_records(), txt_records(), spliced_bytes(txt_records()), st.binary(max_size=64)))
@example(text=b"\x04a\n=x\x05id=d1")
def test_txt(cases: Counter[str], text: bytes) -> None:
    cases["discovery.txt"] += 1
    try:
        txt = parse_txt(text)
    except ValueError:
        return
    cases["discovery.txt -> accepted"] += 1
    assert len(txt) <= MAX_TXT_KEYS
    for key, value in txt.items():
        assert re.fullmatch(r"[\x20-\x3c\x3e-\x7e]{1,64}", key) and key == key.lower(), key
        assert value is None or (len(value) <= 128 and value.isprintable())
    plain = {k: v for k, v in txt.items() if v is not None}
    try:
        encoded = encode_txt(plain)
    except ValueError:
        pass  # an item over 255 bytes cannot be sent back; parsing it was still fine
    else:
        assert parse_txt(encoded) == plain or len(encoded) > 1300
    try:
        device_id, attrs = device_attrs(text)
    except ValueError:
        return
    assert is_id(device_id)
    for key in ("model", "model_version"):
        assert key not in attrs or is_id(attrs[key])


# -- manifest, signed index, key list (gateway/manifest.py, gateway/trust/) --------------------------

DEPLOYMENT = {
    "model_id": "detector",
    "version": "1.0.0",
    "data_version": "d1",
    "artifact_url": "https://cloud.example/models/detector-1.0.0.bin",
    "signature_url": "https://cloud.example/models/detector-1.0.0.bin.sig",
    "sha256": "0" * 64,
    "length": 1000,
    "target_cohort": "hw:rev2",
    "rollout_percentage": 50,
    "start_time": "2026-01-01T00:00:00Z",
    "end_time": "2036-01-01T00:00:00Z",
    "compatibility": {"min_firmware": "1.0.0", "max_firmware": "2.0.0"},
    "health_checks": {
        "max_cpu_percent": 80,
        "max_ram_percent": 80,
        "max_latency_ms": 100,
        "max_error_rate": 0.05,
        "warmup_inferences": 10,
    },
}
deployments = mutated(DEPLOYMENT, nested=("compatibility", "health_checks"))
times = st.one_of(
    junk,
    st.sampled_from(
        [
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00:00",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)


def check_deployment(d: Any) -> None:
    assert is_id(d.model_id) and is_id(d.version) and SHA.fullmatch(d.sha256)
    assert isinstance(d.length, int) and d.length >= 0
    assert math.isfinite(d.rollout_percentage) and 0 <= d.rollout_percentage <= 100
    for t in (d.start_time, d.end_time):
        assert t is None or math.isfinite(t)
    h = d.health
    for v in (h.max_cpu_percent, h.max_ram_percent, h.max_latency_ms, h.max_error_rate):
        assert v is None or math.isfinite(v)


@FUZZ
@given(doc=st.one_of(deployments, junk))
@example(doc={**DEPLOYMENT, "health_checks": {"max_latency_ms": 10**400}})
@example(doc={**DEPLOYMENT, "rollout_percentage": math.nan})
@example(doc={**DEPLOYMENT, "start_time": 10**400})
@example(doc={**DEPLOYMENT, "version": "1.0.0\n"})
@example(doc={**DEPLOYMENT, "sha256": "0" * 64 + "\n"})
def test_manifest(cases: Counter[str], doc: Any) -> None:
    cases["manifest.parse_deployment"] += 1
    try:
        d = parse_deployment(doc)
    except FormatError:
        return
    cases["manifest.parse_deployment -> accepted"] += 1
    check_deployment(d)


@FUZZ
@given(value=times)
@example(value=math.nan)
@example(value=10**400)
def test_time(cases: Counter[str], value: Any) -> None:
    cases["manifest.parse_time"] += 1
    try:
        t = parse_time(value, "t")
    except FormatError:
        return
    assert math.isfinite(t)


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], str]:
    """The cloud's key (made by the real registry tool) and a valid index ``signed`` part."""
    key_dir = tmp_path_factory.mktemp("fuzz-keys")
    _, public = registry.keygen(key_dir)
    key = registry.load_private_key(key_dir / "private.pem")
    signed = {
        "_type": "site-index",
        "site": "test-site",
        "version": 5,
        "issued": "2026-01-01T00:00:00Z",
        "expires": "2036-01-01T00:00:00Z",
        "deployments": [DEPLOYMENT],
        "commands": {"detector@0.9.0": "paused"},
    }
    return key, signed, str(public)


def trusted_index(public: str) -> TrustedIndex:
    return TrustedIndex(load_trusted_keys([Path(public)], "test"), "test-site", highest_version=3)


@st.composite
def index_documents(draw: st.DrawFn, key: Any, signed: dict[str, Any]) -> bytes:
    doc = draw(mutated(signed, nested=("commands",)))
    if draw(st.booleans()) and isinstance(doc.get("deployments"), list):
        doc["deployments"] = draw(st.lists(deployments, max_size=3))
    mode = draw(st.sampled_from(["sign", "sign", "stale", "junk-sigs", "envelope", "bytes"]))
    if mode == "sign":
        try:
            return registry.envelope(doc, key)  # what a cloud could sign: everything canonical JSON holds
        except ValueError:
            mode = "stale"
    if mode == "stale":  # a tampered index under the original signature
        sigs = [{"keyid": keyid(key.public_key()), "sig": "AAAA"}]
        return to_json({"signed": doc, "signatures": sigs})
    if mode == "junk-sigs":
        return to_json({"signed": doc, "signatures": draw(junk)})
    if mode == "envelope":
        return to_json(draw(mutated({"signed": doc, "signatures": [{"keyid": "k", "sig": "s"}]})))
    return draw(spliced_bytes(st.just(to_json({"signed": doc}))) | st.binary(max_size=64))


@FUZZ
@given(data=st.data())
def test_signed_index(
    cases: Counter[str], signer: tuple[Any, dict[str, Any], str], data: st.DataObject
) -> None:
    key, signed, public = signer
    raw = data.draw(index_documents(key, signed))
    cases["trust.verify_index"] += 1
    try:
        idx = trusted_index(public).verify_index(raw, NOW)
    except RemoteDataError:
        return
    cases["trust.verify_index -> accepted"] += 1
    assert isinstance(idx.version, int) and idx.version >= 3
    assert math.isfinite(idx.expires) and idx.expires > NOW
    assert idx.issued is None or math.isfinite(idx.issued)
    for d in idx.deployments:
        check_deployment(d)


def test_signed_index_regressions(signer: tuple[Any, dict[str, Any], str]) -> None:
    """Findings: an unsigned index holding NaN or a lone surrogate escaped as ValueError."""
    key, signed, public = signer
    sigs = [{"keyid": keyid(key.public_key()), "sig": "AAAA"}]
    for bad in ({**signed, "version": math.nan}, {**signed, "site": "\ud800"}):
        with pytest.raises(RemoteDataError):
            trusted_index(public).verify_index(to_json({"signed": bad, "signatures": sigs}), NOW)
    with pytest.raises(RemoteDataError):
        trusted_index(public).verify_index(registry.envelope({**signed, "expires": 10**400}, key), NOW)


@FUZZ
@given(data=st.data())
def test_key_list(cases: Counter[str], signer: tuple[Any, dict[str, Any], str], data: st.DataObject) -> None:
    key, _, public = signer
    valid = {
        "_type": "key-list",
        "version": 2,
        "expires": "2036-01-01T00:00:00Z",
        "keys": [{"public_key_pem": public_pem(key.public_key())}],
    }
    doc = data.draw(mutated(valid))
    if data.draw(st.booleans()):
        doc["keys"] = data.draw(
            st.lists(
                st.fixed_dictionaries(
                    {"public_key_pem": st.one_of(junk, spliced(st.just(public_pem(key.public_key()))))}
                )
                | junk,
                max_size=3,
            )
        )
    try:
        raw = registry.envelope(doc, key)
    except ValueError:
        raw = to_json({"signed": doc, "signatures": [{"keyid": keyid(key.public_key()), "sig": "AAAA"}]})
    cases["trust.update_key_list"] += 1
    try:
        kl = trusted_index(public).update_key_list(raw, NOW)
    except RemoteDataError:
        return
    cases["trust.update_key_list -> accepted"] += 1
    assert kl.version >= 1 and math.isfinite(kl.expires) and kl.expires > NOW


@FUZZ
@given(
    pem=st.one_of(
        st.binary(max_size=200),
        spliced(st.just("-----BEGIN PUBLIC KEY-----\nAAAA\n")).map(
            lambda s: s.encode("utf-8", "surrogatepass")
        ),
    )
)
def test_public_key(cases: Counter[str], pem: bytes) -> None:
    cases["trust.parse_public_key"] += 1
    try:
        parse_public_key(pem, "fuzz")
    except FormatError:
        pass


# -- cohort expressions (gateway/rollout/cohort.py) ---------------------------------------------

cohort_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,6}", fullmatch=True)
bare_values = st.from_regex(r"[A-Za-z0-9_.\-/*]{1,6}", fullmatch=True)
quoted_values = st.text(max_size=6).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
terms = st.builds(lambda k, v: f"{k}:{v}", cohort_keys, bare_values | quoted_values | st.just('"x"*'))
keywords = st.sampled_from(["AND", "and", "And", "OR", "or", "NOT", "not"])
expressions = st.recursive(
    terms,
    lambda e: st.one_of(
        st.builds(lambda a, k, b: f"{a} {k} {b}", e, keywords, e),
        st.builds(lambda e1: f"NOT {e1}", e),
        st.builds(lambda e1: f"({e1})", e),
        st.builds(lambda a, b: f"{a} AND NOT ({b})", terms, terms),  # keeps extend(nothing) non-empty
    ),
    max_leaves=8,
)
cohorts = st.one_of(
    spliced(expressions),
    st.integers(0, 40).map(lambda n: "(" * n + "a:b" + ")" * n),
    st.integers(0, 40).map(lambda n: "NOT " * n + "a:b"),
    st.sampled_from(["", "*", " * ", '"', "a:", ":b", "a:b)", "(a:b", 'a:"\\', "AND:x", "a:b c:d"]),
    st.text(max_size=30),
)
attr_maps = st.dictionaries(cohort_keys, bare_values | st.text(max_size=4), max_size=4)


@FUZZ
@given(text=cohorts, attrs=attr_maps)
def test_cohort(cases: Counter[str], text: str, attrs: dict[str, str]) -> None:
    cases["rollout.cohort"] += 1
    try:
        expr = parse_cohort(text)
    except CohortSyntaxError:
        return
    cases["rollout.cohort -> accepted"] += 1
    assert parse_cohort(str(expr)) == expr, (text, str(expr))
    assert isinstance(expr.matches(attrs), bool)


# -- firmware versions (firmware_compat/) -------------------------------------------------------

version_texts = spliced(
    st.builds(
        lambda prefix, nums, pre, build, ws: ws + prefix + ".".join(nums) + pre + build + ws,
        st.sampled_from(["", "", "v", "fw_", "model-", "V", "x1_", "v_"]),
        st.lists(st.integers(0, 10**10).map(str) | st.sampled_from(["01", "00", ""]), min_size=1, max_size=5),
        st.sampled_from(["", "", "-rc.1", "-0", "-01", "-alpha.beta", "-", "-rc..1", "-1.x-y"]),
        st.sampled_from(["", "", "+build.5", "+", "+a+b"]),
        st.sampled_from(["", " ", "\t", "\n"]),
    )
)


@FUZZ
@given(a=version_texts, b=version_texts, c=version_texts)
@example(a="1.0.0-rc.1", b="1.0.0", c="1.0.0+build")
def test_versions(cases: Counter[str], a: str, b: str, c: str) -> None:
    cases["firmware_compat.version"] += 3
    parsed = []
    for text in (a, b, c):
        try:
            v = parse_version(text)
        except VersionError:
            continue
        cases["firmware_compat.version -> accepted"] += 1
        assert parse_version(str(v)) == v and hash(parse_version(str(v))) == hash(v)
        parsed.append(v)
    for x in parsed:
        for y in parsed:
            assert sum((x < y, x == y, x > y)) == 1  # a total order
            for z in parsed:
                if x <= y <= z:
                    assert x <= z
    try:
        rng = FirmwareRange.parse(a or None, b or None)
    except VersionError:
        return
    for v in parsed:
        assert rng.contains(v) == ((rng.min is None or rng.min <= v) and (rng.max is None or v <= rng.max))


MATRIX = {"models": {"detector": {"fw_1.6.0": ["1.0.0", "1.1.0"], "fw_1.8.0": ["1.0.0", "2.0.0"]}}}


@FUZZ
@given(doc=st.one_of(mutated(MATRIX, nested=("models",)), junk))
def test_matrix(cases: Counter[str], doc: Any) -> None:
    cases["firmware_compat.matrix"] += 1
    try:
        CompatMatrix.from_json(doc)
    except MatrixError:
        pass


def test_canonical_json_refuses_nan() -> None:
    """The reason a NaN in an index is a FormatError: its signature could never be checked."""
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})


# -- credentials in headers (gateway/http/devices.py bearer_of, gateway/http/operator.py) -----------

authorizations = st.one_of(
    st.sampled_from(
        ["Bearer abc", "bearer  abc ", "Basic dTpw", "Basic !!!", "Basic gA==", "Basic", "Bearer", ""]
    ),
    st.tuples(st.sampled_from(["Bearer", "Basic", "bEaReR", "Digest"]), st.text(max_size=30)).map(" ".join),
    st.text(max_size=30),
)


@FUZZ
@given(value=authorizations.filter(lambda v: "\r" not in v and "\n" not in v))
@example(value="Basic gA==")  # base64 of a byte that is not UTF-8
def test_authorization_headers(cases: Counter[str], value: str) -> None:
    cases["http.authorization_header"] += 1
    request = make_mocked_request("GET", "/", headers={"Authorization": value})
    token = bearer_of(request)
    assert token is None or (token and token == token.strip())
    presented = _presented_token(request)
    assert presented is None or isinstance(presented, str)

"""Pure rules: identity and topic subtrees, the wire framing; table-driven."""

from __future__ import annotations

import pytest

from gateway.broker import rules, wire
from gateway.broker.rules import PeerCredentials


@pytest.mark.parametrize(
    ("device", "topic", "ok"),
    [
        ("dev1", "devices/dev1/metrics", True),
        ("dev1", "devices/dev1/a/b/c", True),
        ("dev1", "devices/dev1/", False),
        ("dev1", "devices/dev1", False),
        ("dev1", "devices/dev2/metrics", False),
        ("dev1", "devices/dev10/metrics", False),
        ("dev1", "devices/+/metrics", False),
        ("dev1", "devices/dev1/#", False),
        ("dev1", "$SYS/broker", False),
        ("dev1", "other/dev1/metrics", False),
        ("dev1", "devices/dev1/\x00", False),
    ],
)
def test_may_publish(device: str, topic: str, ok: bool) -> None:
    assert rules.may_publish(device, topic) is ok


@pytest.mark.parametrize(
    ("device", "topic_filter", "ok"),
    [
        ("dev1", "devices/dev1/#", True),
        ("dev1", "devices/dev1/updates", True),
        ("dev1", "devices/dev1/+/x", True),
        ("dev1", "#", False),
        ("dev1", "+/dev1/#", False),
        ("dev1", "devices/+/updates", False),
        ("dev1", "devices/#", False),
        ("dev1", "devices/dev1/#/x", False),
        ("dev1", "devices/dev1/a#", False),
        ("dev1", "devices/dev2/#", False),
        ("dev1", "devices/dev1", False),
    ],
)
def test_may_subscribe(device: str, topic_filter: str, ok: bool) -> None:
    assert rules.may_subscribe(device, topic_filter) is ok


@pytest.mark.parametrize(
    ("creds", "lab", "device", "bad"),
    [
        (PeerCredentials("c", "dev1", "t", None), False, "dev1", False),
        (PeerCredentials("c", None, None, None), False, None, False),
        (PeerCredentials("lab-1", None, None, None), True, "lab-1", False),
        (PeerCredentials("lab/1", None, None, None), True, None, True),
        (PeerCredentials("c", None, "t", None), True, None, False),  # password without user name
        (PeerCredentials("c", None, None, "dev9"), False, "dev9", False),
        (PeerCredentials("c", "dev9", "t", "dev9"), False, "dev9", False),
        (PeerCredentials("c", "dev1", "t", "dev9"), False, None, True),
        (PeerCredentials("c", "../etc", "t", None), False, None, True),
    ],
)
def test_claimed_identity(creds: PeerCredentials, lab: bool, device: str | None, bad: bool) -> None:
    identity = rules.claimed_identity(creds, lab_mode=lab)
    assert identity.device_id == device
    assert identity.bad_credentials is bad


def test_session_keys_stay_inside_the_device() -> None:
    assert rules.session_key("dev1", "dev1") == "dev1"
    assert rules.session_key("dev1", "") == "dev1"
    assert rules.session_key("dev2", "dev1") == "dev2/dev1"


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455])
def test_remaining_length_round_trip(length: int) -> None:
    encoded = wire.encode_remaining_length(length)
    assert wire.decode_remaining_length(encoded) == (length, len(encoded))


def test_remaining_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(wire.MalformedPacket):
        wire.decode_remaining_length(bytes((0xFF, 0xFF, 0xFF, 0xFF, 0x7F)))


def test_publish_round_trip_and_rejections() -> None:
    raw = wire.encode_publish("devices/d/metrics", b"{}", 1, 7)
    p = wire.parse_publish(raw[0] & 0x0F, raw[2:])
    assert (p.topic, p.payload, p.qos, p.packet_id, p.retain, p.dup) == (
        "devices/d/metrics",
        b"{}",
        1,
        7,
        False,
        False,
    )
    for flags, body in [
        (0b0110, raw[2:]),
        (0b0010, b"\x00"),
        (0b0010, b"\x00\x02ab\x00\x00"),
        (0, b"\x00\x02\xff\xfe"),
    ]:
        with pytest.raises(wire.MalformedPacket):
            wire.parse_publish(flags, body)

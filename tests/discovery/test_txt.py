"""TXT parsing and building (RFC 6763 section 6) and interface selection: pure, no network."""

from __future__ import annotations

import socket

import pytest
from zeroconf import IPVersion

from gateway.core.errors import ConfigError
from gateway.discovery.net import resolve_interfaces
from gateway.discovery.txt import (
    MAX_TXT_BYTES,
    device_attrs,
    encode_txt,
    gateway_txt,
    parse_txt,
)


def rdata(*items: bytes) -> bytes:
    return b"".join(bytes([len(i)]) + i for i in items)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"\x00", {}),
        (rdata(b"id=cam-1", b"HW=rev2"), {"id": "cam-1", "hw": "rev2"}),
        (rdata(b"id=a", b"id=b"), {"id": "a"}),  # 6.4: only the first occurrence counts
        (rdata(b"flag", b"empty="), {"flag": None, "empty": ""}),  # 6.4: boolean vs empty
        (rdata("loc=Halle Süd".encode()), {"loc": "Halle Süd"}),
    ],
)
def test_parse_txt_follows_rfc_6763(text: bytes, expected: dict[str, str | None]) -> None:
    assert parse_txt(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"\x05ab", "past the end"),
        (rdata(b"=v"), "empty or not printable"),
        (rdata(b"k\x01=v"), "not printable"),
        (rdata(b"\xff=v"), "not ASCII"),
        (rdata(b"k=\xff"), "not UTF-8"),
        (rdata(b"k=a\nb"), "control characters"),
        (rdata(b"k" * 65 + b"=v"), "longer than 64"),
        (rdata(b"k=" + b"v" * 129), "longer than 128"),
        (rdata(*(f"k{i}=v".encode() for i in range(33))), "more than 32"),
        (rdata(*(b"k" + bytes([65 + i % 26]) * 40 + f"{i}=v".encode() for i in range(31))), r"bytes \(limit"),
    ],
)
def test_parse_txt_refuses_what_breaks_a_bound(text: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_txt(text)


def test_device_attrs_takes_id_and_cohort_attributes() -> None:
    text = rdata(
        b"txtvers=1",
        b"id=cam-1",
        b"hw=rev2",
        b"fw=1.2.0",
        b"model=det",
        b"model_version=1.0",
        b"x",
        b"line=3",
    )
    assert device_attrs(text) == (
        "cam-1",
        {"hw": "rev2", "fw": "1.2.0", "model": "det", "model_version": "1.0", "line": "3"},
    )


@pytest.mark.parametrize(
    "text", [rdata(b"hw=rev2"), rdata(b"id=../x"), rdata(b"id="), rdata(b"id=a", b"model=a b"), rdata(b"id")]
)
def test_device_attrs_refuses_records_without_a_valid_id_or_model(text: bytes) -> None:
    with pytest.raises(ValueError):
        device_attrs(text)


def test_gateway_txt_under_tls_carries_the_fingerprint() -> None:
    fp = "AB:" * 31 + "AB"
    assert gateway_txt(site="s", api_path="/", tls=True, mqtt_port=1883, cert_sha256=fp) == {
        "txtvers": "1", "site": "s", "api": "/", "tls": "1", "mqtt": "1883", "fp": "ab" * 32,
    }  # fmt: skip
    assert gateway_txt(site="s", api_path="/", tls=False, mqtt_port=None, cert_sha256=fp) == {
        "txtvers": "1", "site": "s", "api": "/", "tls": "0",
    }  # fmt: skip
    for bad in ({"api_path": "x"}, {"mqtt_port": 0}, {"cert_sha256": "abc"}):
        kw = {"site": "s", "api_path": "/", "tls": True, "mqtt_port": 1, "cert_sha256": None, **bad}
        with pytest.raises(ValueError):
            gateway_txt(**kw)  # type: ignore[arg-type]


def test_encode_round_trips_and_stays_in_bounds() -> None:
    txt = {"site": "s", "api": "/"}
    assert parse_txt(encode_txt(txt)) == txt
    assert encode_txt({}) == b"\x00"
    assert len(encode_txt({"k": "v" * 250})) <= MAX_TXT_BYTES
    with pytest.raises(ValueError):
        encode_txt({"k": "v" * 300})


TABLE = {
    "lo": [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
    "eth0": [(socket.AF_PACKET, "aa:bb"), (socket.AF_INET, "10.0.0.5"), (socket.AF_INET6, "fe80::1%eth0")],
    "eth1": [(socket.AF_INET, "192.168.1.5"), (socket.AF_INET, "192.168.2.5")],
    "down0": [(socket.AF_INET, "172.16.0.1")],
}
INDEX = {"lo": 1, "eth0": 2, "eth1": 3, "down0": 4}


def resolve(*entries: str) -> object:
    return resolve_interfaces(entries, TABLE, INDEX.__getitem__, lambda n: n != "down0")


def test_default_is_every_non_loopback_address_of_interfaces_that_are_up() -> None:
    b = resolve()
    assert b.interfaces == ("10.0.0.5", "192.168.1.5", 2)  # type: ignore[attr-defined]
    assert b.addresses == ("10.0.0.5", "fe80::1", "192.168.1.5", "192.168.2.5")  # type: ignore[attr-defined]
    assert b.ip_version is IPVersion.All  # type: ignore[attr-defined]


def test_names_and_addresses_can_be_mixed() -> None:
    b = resolve("eth0")
    assert (b.interfaces, b.addresses) == (("10.0.0.5", 2), ("10.0.0.5", "fe80::1"))  # type: ignore[attr-defined]
    b = resolve("192.168.2.5")
    assert (b.interfaces, b.addresses, b.ip_version) == (("192.168.2.5",), ("192.168.2.5",), IPVersion.V4Only)  # type: ignore[attr-defined]
    b = resolve("fe80::1")
    assert (b.interfaces, b.ip_version) == ((2,), IPVersion.V6Only)  # type: ignore[attr-defined]


@pytest.mark.parametrize("entry", ["wlan9", "10.9.9.9", "not an address"])
def test_an_interface_this_host_lacks_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"discovery\.interfaces"):
        resolve(entry)

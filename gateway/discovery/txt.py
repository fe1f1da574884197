"""DNS-SD TXT records (RFC 6763 section 6): parse a device's, build the gateway's. Pure: no sockets.

A TXT record is a sequence of length-prefixed ``key=value`` strings (section 6.1). Keys are printable
US-ASCII without ``=``, compared case-insensitively (6.4); a key without ``=`` is a boolean attribute
(6.4); of a repeated key only the first counts (6.4); the whole record should stay under 1300 bytes
so that it fits one Ethernet packet with the other records (6.2). A device's record is untrusted
input, so every bound here is enforced, and anything outside them makes the whole record malformed
(``ValueError`` naming the reason): the caller logs it and ignores the record.

What a value means (cohort matching, model versions) is left to the inventory and the rollout logic.
"""

from __future__ import annotations

import re

from gateway.core.manifest import valid_id

MAX_TXT_BYTES = 1300  # RFC 6763 section 6.2
MAX_TXT_KEYS = 32
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 128  # the inventory's own bound on an attribute value

# Keys the device record format defines (docs: README, DESIGN "mDNS"); any other key is a cohort
# attribute. ``txtvers`` (RFC 6763 section 6.7) is the format version, not an attribute.
DEVICE_KEYS = ("id", "hw", "fw", "model", "model_version")
# printable ASCII except '=' (section 6.4); \Z, not $: "$" also matches before a final newline
_KEY = re.compile(r"^[\x20-\x3c\x3e-\x7e]+\Z")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}\Z")


def parse_txt(text: bytes) -> dict[str, str | None]:
    """Raw TXT rdata -> {lower-case key: value, or None for a boolean attribute}; ValueError if bad."""
    if len(text) > MAX_TXT_BYTES:
        raise ValueError(f"TXT record of {len(text)} bytes (limit {MAX_TXT_BYTES})")
    out: dict[str, str | None] = {}
    pos = 0
    while pos < len(text):
        length = text[pos]
        chunk = text[pos + 1 : pos + 1 + length]
        if len(chunk) != length:
            raise ValueError("TXT string runs past the end of the record")
        pos += 1 + length
        if not chunk:
            continue  # an empty string: the empty record is one zero byte (section 6.1)
        raw_key, sep, raw_value = chunk.partition(b"=")
        try:
            key = raw_key.decode("ascii").lower()
        except UnicodeDecodeError:
            raise ValueError("TXT key is not ASCII") from None
        if not _KEY.match(key):
            raise ValueError(f"TXT key {key!r} is empty or not printable ASCII")
        if len(key) > MAX_KEY_CHARS:
            raise ValueError(f"TXT key {key[:16]!r}... longer than {MAX_KEY_CHARS} characters")
        if key in out:
            continue  # section 6.4: silently ignore all but the first occurrence
        if len(out) >= MAX_TXT_KEYS:
            raise ValueError(f"more than {MAX_TXT_KEYS} TXT keys")
        if not sep:
            out[key] = None
            continue
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"TXT value of {key!r} is not UTF-8") from None
        if len(value) > MAX_VALUE_CHARS:
            raise ValueError(f"TXT value of {key!r} longer than {MAX_VALUE_CHARS} characters")
        if not value.isprintable():
            raise ValueError(f"TXT value of {key!r} has control characters")
        out[key] = value
    return out


def device_attrs(text: bytes) -> tuple[str, dict[str, str]]:
    """A device's TXT -> (device id, attributes for the inventory); ValueError when malformed.

    ``id`` is required and must be a valid device id; ``model`` and ``model_version``, when present,
    must be valid ids too. Boolean keys and ``txtvers`` carry no attribute and are dropped.
    """
    txt = parse_txt(text)
    device_id = txt.pop("id", None)
    if not device_id or not valid_id(device_id):
        raise ValueError(f"missing or invalid device id {device_id!r}")
    for key in ("model", "model_version"):
        value = txt.get(key)
        if value is not None and not valid_id(value):
            raise ValueError(f"invalid {key} {value!r}")
    txt.pop("txtvers", None)
    return device_id, {k: v for k, v in txt.items() if v is not None}


def gateway_txt(
    *, site: str, api_path: str, tls: bool, mqtt_port: int | None, cert_sha256: str | None
) -> dict[str, str]:
    """The gateway's ``_ota-gateway._tcp`` TXT: what a device needs to use it without a config.

    ``fp`` (the SHA-256 of the gateway's DER certificate, lower-case hex) is only sent under TLS:
    a device may pin it. ValueError on a value a device could not parse back.
    """
    if not api_path.startswith("/"):
        raise ValueError(f"api path {api_path!r} must start with '/'")
    txt = {"txtvers": "1", "site": site, "api": api_path, "tls": "1" if tls else "0"}
    if mqtt_port is not None:
        if not 0 < mqtt_port < 65536:
            raise ValueError(f"mqtt port {mqtt_port} out of range")
        txt["mqtt"] = str(mqtt_port)
    if tls and cert_sha256:
        fp = cert_sha256.lower().replace(":", "")
        if not _FINGERPRINT.match(fp):
            raise ValueError("cert fingerprint must be 64 hex digits (SHA-256)")
        txt["fp"] = fp
    encoded = encode_txt(txt)
    if len(encoded) > MAX_TXT_BYTES:
        raise ValueError(f"TXT record of {len(encoded)} bytes (limit {MAX_TXT_BYTES})")
    return txt


def encode_txt(txt: dict[str, str]) -> bytes:
    """{key: value} -> TXT rdata (RFC 6763 section 6.1); ValueError on a string over 255 bytes."""
    out = bytearray()
    for key, value in txt.items():
        item = f"{key}={value}".encode()
        if len(item) > 255:
            raise ValueError(f"TXT string for {key!r} longer than 255 bytes")
        out.append(len(item))
        out += item
    return bytes(out) or b"\x00"

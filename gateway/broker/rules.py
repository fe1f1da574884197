"""Who may connect as whom, and which topics a device may touch: pure rules, no I/O.

A device's MQTT identity is its device id: the client certificate's CN under mutual TLS, else the
CONNECT user name, else (no credentials at all) the client identifier. Every device
lives in its own subtree ``devices/{id}/``: it may publish only to topic names inside it and
subscribe only to filters inside it (``devices/{id}/#``, ``devices/{id}/updates``, ...). Nothing
else, not ``#``, not ``devices/+/metrics``, not ``$SYS/#``.

Topic syntax follows MQTT 3.1.1 section 4.7 (levels, ``+`` and ``#`` wildcards, ``$`` topics).
The broker (``gateway.broker.server``) applies these rules through amqtt plugins
(``gateway.broker.plugins``); this module only answers yes or no.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.manifest import valid_id

TOPIC_ROOT = "devices/"
MAX_TOPIC_BYTES = 1024  # far beyond anything a device needs; keeps log lines and dict keys small


def device_prefix(device_id: str) -> str:
    return f"{TOPIC_ROOT}{device_id}/"


def topic_device(topic: str) -> str | None:
    """The device id a topic name or filter lies under (``devices/{id}/...``), or None."""
    if not topic.startswith(TOPIC_ROOT):
        return None
    rest = topic[len(TOPIC_ROOT) :]
    device_id, sep, tail = rest.partition("/")
    if not sep or not tail or not valid_id(device_id):
        return None
    return device_id


def valid_topic_name(topic: str) -> bool:
    """A topic name a client may PUBLISH to: non-empty, no wildcards, no NUL [MQTT-4.7.3-1, 3.3.2-2]."""
    return 0 < len(topic) <= MAX_TOPIC_BYTES and not any(c in topic for c in "+#\x00")


def valid_topic_filter(topic_filter: str) -> bool:
    """A well-formed filter: ``#`` only as the whole last level, ``+`` only as a whole level [MQTT-4.7.1]."""
    if not 0 < len(topic_filter) <= MAX_TOPIC_BYTES or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def may_publish(device_id: str, topic: str) -> bool:
    """Only under the device's own subtree, with at least one level below it."""
    return valid_topic_name(topic) and topic_device(topic) == device_id


def may_subscribe(device_id: str, topic_filter: str) -> bool:
    """Only filters inside ``devices/{id}/``: the id level itself must be literal, never a wildcard."""
    return valid_topic_filter(topic_filter) and topic_device(topic_filter) == device_id


@dataclass(frozen=True)
class PeerCredentials:
    """What a CONNECT (and the TLS layer) told us about the peer."""

    client_id: str
    username: str | None
    password: str | None
    cert_cn: str | None  # CN of a client certificate the TLS layer verified


@dataclass(frozen=True)
class Identity:
    """The outcome: a device id, or why not. ``reason`` is for the log and picks the CONNACK code."""

    device_id: str | None
    reason: str = ""
    bad_credentials: bool = False  # True: CONNACK 0x04 (bad user name or password); else 0x05


def claimed_identity(creds: PeerCredentials, *, lab_mode: bool) -> Identity:
    """Which device the peer claims to be, before any secret is checked.

    Under mTLS the certificate's CN is the identity; a user name that disagrees with it is refused
    rather than guessed at. Without any credential a client is named by its client identifier when
    ``lab_mode`` is true (the broker's auth plugin always asks for that, and leaves whether such a
    client may connect to the credential check: open access or lab mode); otherwise it is refused.
    """
    if creds.cert_cn is not None:
        if creds.username not in (None, "", creds.cert_cn):
            return Identity(None, "user name differs from the certificate CN", bad_credentials=True)
        claimed = creds.cert_cn
    elif creds.username:
        claimed = creds.username
    elif lab_mode and creds.password is None:
        claimed = creds.client_id
    else:
        return Identity(None, "no credentials (anonymous clients only in lab mode)")
    if not valid_id(claimed):
        return Identity(None, f"{claimed!r} is not a valid device id", bad_credentials=True)
    return Identity(claimed)


def session_key(device_id: str, client_id: str) -> str:
    """The broker's session key: a device can only ever own, resume or take over its own sessions.

    A client identifier equal to the device id (or empty) maps to the device id itself; any other
    is namespaced under it, so a device that reuses another device's client identifier gets its
    own session instead of kicking the other device off [MQTT-3.1.4-2 applies within a device].
    """
    if client_id in ("", device_id):
        return device_id
    return f"{device_id}/{client_id}"

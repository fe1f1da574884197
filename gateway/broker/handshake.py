"""From CONNECT to CONNACK: parse and check the packet, authenticate the device, find room and its
session (new, resumed or taken over). :mod:`gateway.broker.connection` reads the packet, calls
these in order, and accepts; every refusal raises :class:`Refused` with the CONNACK code to send.
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.adapters import BufferReader
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import MQTTFixedHeader

from gateway.broker import wire
from gateway.broker.hub import Hub
from gateway.broker.plugins import DEVICE_ID, REFUSAL
from gateway.broker.session import LeanSession

log = logging.getLogger("gateway.broker.connection")  # one logger for a connection's story

# CONNACK return codes [MQTT-3.2.2.3]
CONNACK_ACCEPTED = 0
CONNACK_BAD_PROTOCOL = 1
CONNACK_ID_REJECTED = 2
CONNACK_SERVER_UNAVAILABLE = 3
CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORIZED = 5


class Refused(Exception):
    """This client broke a rule (protocol level, credentials, capacity, topic): close quietly, after
    the CONNACK ``code`` if there is one (it has been logged)."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__(code)
        self.code = code


# what a resumed session takes from the new connection [MQTT-3.1.2-4]
RESUMED = ("will_flag", "will_retain", "will_qos", "will_topic", "will_message", "keep_alive")


async def parse_connect(flags: int, body: bytes) -> ConnectPacket:
    """The CONNECT packet; :class:`wire.MalformedPacket` when it is not one."""
    wire.check_flags(wire.CONNECT, flags)
    try:
        connect = await ConnectPacket.from_stream(
            BufferReader(body), fixed_header=MQTTFixedHeader(wire.CONNECT, flags, len(body))
        )
    except (AMQTTError, MQTTError, NoDataError, ValueError, IndexError) as exc:
        raise wire.MalformedPacket(f"CONNECT: {exc}") from exc
    if connect.proto_name != "MQTT":
        raise wire.MalformedPacket(f"protocol name {connect.proto_name!r}")  # [MQTT-3.1.2-1]
    return connect


def check_connect(connect: ConnectPacket) -> None:
    """:class:`Refused` for a CONNECT refused before any credential is looked at;
    :class:`wire.MalformedPacket` when its flags and payload disagree."""
    if connect.proto_level != 4:
        raise Refused(CONNACK_BAD_PROTOCOL)  # only MQTT 3.1.1 [MQTT-3.1.2-2]
    if (
        connect.reserved_flag
        or (connect.username_flag and connect.username is None)
        or (connect.password_flag and (connect.password is None or not connect.username_flag))
        or (connect.will_flag and (connect.will_topic is None or connect.will_message is None))
        or connect.will_qos == 3
    ):
        raise wire.MalformedPacket("CONNECT flags and payload disagree")  # [MQTT-3.1.2-3, -14, -22]
    if connect.payload.client_id_is_random and not connect.clean_session_flag:
        raise Refused(CONNACK_ID_REJECTED)  # [MQTT-3.1.3-8]


def new_session(connect: ConnectPacket, peer: str, ssl_object: object, queue_limit: int) -> LeanSession:
    """The session this CONNECT describes (the auth plugins read it)."""
    session = LeanSession(queue_limit)
    session.client_id = "" if connect.payload.client_id_is_random else connect.client_id
    session.clean_session = connect.clean_session_flag
    session.will_flag = connect.will_flag
    session.will_retain = connect.will_retain_flag
    session.will_qos = connect.will_qos
    session.will_topic = connect.will_topic
    session.will_message = connect.will_message
    session.username = connect.username
    session.password = connect.password
    session.keep_alive = max(connect.keep_alive, 0)
    session.ssl_object = ssl_object
    return session


def resume(stored: LeanSession, fresh: LeanSession) -> LeanSession:
    """The stored session, resumed with the new connection's parameters [MQTT-3.1.2-4]."""
    for name in RESUMED:
        setattr(stored, name, getattr(fresh, name))
    stored.ssl_object = fresh.ssl_object
    stored.parent = 1
    return stored


async def authenticate(core: Hub, session: LeanSession, peer: str) -> str:
    """The device this session is, by the auth plugins; its will topic must be its own. The
    password is dropped once checked."""
    if not await core._authenticate(session, None):
        identity = session.attributes.get(REFUSAL)
        reason = identity.reason if identity is not None else "refused by an auth plugin"
        bad = identity is not None and identity.bad_credentials
        core.stats.inc("refused")
        log.warning(
            "mqtt (%s) client %r user %r refused: %s", peer, session.client_id, session.username, reason
        )
        raise Refused(CONNACK_BAD_CREDENTIALS if bad else CONNACK_NOT_AUTHORIZED)
    device_id: str = session.attributes[DEVICE_ID]
    if session.will_flag and not await core._topic_filtering(
        session, session.will_topic or "", Action.PUBLISH
    ):
        core.stats.inc("refused")
        log.warning(
            "mqtt %s (%s) refused: will topic %r outside its subtree", device_id, peer, session.will_topic
        )
        raise Refused(CONNACK_NOT_AUTHORIZED)
    session.password = None  # no need to keep the token in memory
    return device_id


async def find_session(
    core: Hub, session: LeanSession, device_id: str, key: str, me: Any, peer: str
) -> LeanSession:
    """The session connection ``me`` is to use under ``key``. Refused when the broker is full (a
    take-over always has room) or a new persistent session would pass the device's cap; else a
    session under this key is taken over (its connection closed) and resumed, or replaced."""
    existing = core._sessions.get(key)
    taking_over = existing is not None and existing[1] is not None and existing[1] is not me
    if core.authenticated >= core.limits.max_connections and not taking_over:
        core.stats.inc("refused_full")
        log.warning(
            "mqtt %s (%s): %d clients connected already, refused", device_id, peer, core.authenticated
        )
        raise Refused(CONNACK_SERVER_UNAVAILABLE)
    if existing is None:
        if not session.clean_session and not await core.reserve_session(device_id, key):
            core.stats.inc("sessions_refused")
            log.warning(
                "mqtt %s (%s): client %r refused: %d persistent sessions of this device are connected",
                device_id, peer, session.client_id, core.limits.max_sessions_per_device,
            )  # fmt: skip
            raise Refused(CONNACK_ID_REJECTED)
        return session
    old_session, old_handler = existing
    if old_handler is not None and old_handler is not me:
        old_handler.abort("taken over by a new connection")  # [MQTT-3.1.4-2]
    if session.clean_session or not isinstance(old_session, LeanSession):
        await core._delete_session(key)
        return session
    core.touch_session(device_id, key)
    return resume(old_session, session)


def register(core: Hub, me: Any, session: LeanSession, device_id: str, key: str) -> int:
    """Connection ``me`` holds ``session`` under ``key`` now; the CONNACK's session-present flag."""
    session.client_id = key
    session.connect()
    core._sessions[key] = (session, me)
    core.device_conns[device_id] = core.device_conns.get(device_id, 0) + 1
    core.authenticated += 1
    core.stats.inc("accepted")
    return session.parent if not session.clean_session else 0


def connack(session_present: int, code: int) -> bytes:
    return bytes(ConnackPacket.build(session_present, code).to_bytes())

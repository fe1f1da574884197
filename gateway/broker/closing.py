"""When a device connection ends: why (counted and logged), out of the broker's tables, its will published if it went
without DISCONNECT [MQTT-3.1.2-8], and its session dropped (clean session) or kept offline
(persistent) [MQTT-3.1.2-4/6] unless another connection has taken it over meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.broker import wire
from gateway.broker.handshake import Refused
from gateway.broker.hub import Hub
from gateway.broker.session import LeanSession

log = logging.getLogger("gateway.broker.connection")  # one logger for a connection's story


async def finish(
    core: Hub, me: Any, session: LeanSession | None, key: str | None, device_id: str | None
) -> None:
    """Connection ``me`` (``counted``, ``clean_exit``) has closed; ``session`` is what it held."""
    core.live.discard(me)
    core.pending.pop(me, None)
    if session is None or key is None or device_id is None:
        return
    if me.counted:
        core.authenticated -= 1
        left = core.device_conns.get(device_id, 1) - 1
        if left > 0:
            core.device_conns[device_id] = left
        else:
            core.device_conns.pop(device_id, None)
    entry = core._sessions.get(key)
    if entry is None or entry[1] is not me:
        return  # taken over or deleted: the session is someone else's now
    if not me.clean_exit and session.will_flag and session.will_topic:
        # the network connection closed without DISCONNECT: publish the will [MQTT-3.1.2-8]
        try:
            core.ingest(device_id, session.will_topic, bytes(session.will_message or b""))
            if core.has_subscribers(session.will_topic):
                await core._broadcast_message(
                    session, session.will_topic, session.will_message, session.will_qos
                )
        except Exception:
            log.exception("mqtt %s: will message not delivered", device_id)
    session.disconnect()
    if session.clean_session:
        core._sessions.pop(key, None)
        await core._del_all_subscriptions(session)
    else:
        core._sessions[key] = (session, None)  # offline: keep the session, not this object


def note_failure(core: Hub, exc: BaseException, who: str) -> None:
    """Count and log why a connection is being closed (a refusal was logged where it was made)."""
    if isinstance(exc, wire.PacketTooLarge):
        core.stats.inc("oversized")
        log.warning("mqtt %s: %s, dropped", who, exc)
    elif isinstance(exc, wire.MalformedPacket):
        core.stats.inc("malformed")
        log.warning("mqtt %s: malformed packet (%s), dropped", who, exc)
    elif not isinstance(exc, Refused | ConnectionError | OSError):
        core.stats.inc("internal_errors")
        log.error(
            "mqtt %s: unexpected error, connection dropped", who, exc_info=(type(exc), exc, exc.__traceback__)
        )

"""Our amqtt plugins: who may connect, and which topics each device may use.

amqtt's own ACL plugin has no per-client substitution (``devices/{id}/#``), and its
``allow-anonymous: false`` does not unload the anonymous plugin, so the broker is configured with
exactly these two plugins and nothing else (see :mod:`gateway.broker.server`).

* :class:`DeviceAuthPlugin`: a client is a device; its MQTT user name is its device id and its
  password its device token (or, under TLS with client certificates, the certificate's CN is its
  id). The decision is the gateway's :class:`~gateway.access.Credentials`, shared with HTTP.
  Anonymous clients only in ``mqtt.lab_mode``.
* :class:`DeviceTopicPlugin`: a device publishes only under ``devices/{its id}/`` and subscribes only
  to filters under ``devices/{its id}/``; anything else is refused and logged. MQTT 3.1.1 has no
  negative acknowledgement for PUBLISH (section 3.3.5): a refused publish is acknowledged per its
  QoS and dropped, and counted; a refused SUBSCRIBE gets the SUBACK failure code 0x80.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

log = logging.getLogger(__name__)

# The client certificate's CN of the connection being authenticated (set by the broker per
# connection task; plugin calls run in tasks that inherit the context).
PEER_CN: contextvars.ContextVar[str | None] = contextvars.ContextVar("peer_cn", default=None)

Authenticate = Callable[[str | None, str | None, str | None], bool]


@dataclass
class Hooks:
    """What the plugins need from the gateway, passed in through the plugin config."""

    authenticate: Authenticate
    count: Callable[[str], None]


def device_namespace(device_id: str) -> str:
    return f"devices/{device_id}/"


def topic_allowed(device_id: str | None, topic: str | None, action: Action) -> bool:
    """Pure: may this device use this topic (or topic filter) for this action?"""
    if not device_id or not topic:
        return False
    prefix = device_namespace(device_id)
    if not topic.startswith(prefix):
        return False
    if action == Action.PUBLISH:
        return "+" not in topic and "#" not in topic
    return True  # SUBSCRIBE/RECEIVE: wildcards allowed below its own id only (the prefix has none)


class DeviceAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        hooks: Any = None

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.hooks: Hooks = self.config.hooks

    async def authenticate(self, *, session: Session) -> bool | None:
        user, password, cn = session.username, session.password, PEER_CN.get()
        ok = self.hooks.authenticate(user, password, cn)
        if not ok:
            self.hooks.count("mqtt.refused_auth")
            log.warning(
                "MQTT client %r (user %r) refused: bad or missing device credentials", session.client_id, user
            )
        return ok


class DeviceTopicPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        hooks: Any = None
        lab_mode: bool = False

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.hooks: Hooks = self.config.hooks
        self.lab_mode: bool = self.config.lab_mode

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        if session is None or action is None:
            return False
        device = session.username or (session.client_id if self.lab_mode else None)
        if topic_allowed(device, topic, action):
            return True
        if action != Action.RECEIVE:  # RECEIVE is the broker asking, per subscriber: not an offence
            self.hooks.count(f"mqtt.refused_{action.value}")
            log.warning(
                "MQTT %s: %s to %r refused (outside devices/%s/)", device, action.value, topic, device
            )
        return False

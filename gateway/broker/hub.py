"""What one connection needs from the broker it belongs to: the bounds, and the shared tables and
fan-out of amqtt's core. :mod:`gateway.broker.amqtt_core` implements it (``AmqttCore``);
:mod:`gateway.broker.connection` uses only this, so the two do not import each other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from amqtt.contexts import Action

from gateway.core.settings import MqttSettings
from gateway.runtime.stats import Stats


@dataclass(frozen=True)
class MqttLimits:
    max_packet_bytes: int
    max_connections: int
    max_queued_messages: int
    connect_timeout_s: float
    max_pending_connections: int = 256
    max_sessions_per_device: int = 4

    @classmethod
    def from_settings(cls, s: MqttSettings) -> MqttLimits:
        return cls(
            s.max_packet_bytes,
            s.max_connections,
            s.max_queued_messages,
            s.connect_timeout_s,
            s.max_pending_connections,
            s.max_sessions_per_device,
        )


class Hub(Protocol):
    limits: MqttLimits
    stats: Stats
    live: set[Any]  # connections logged in
    pending: dict[Any, None]  # connections without a whole CONNECT yet, oldest first
    authenticated: int
    device_conns: dict[str, int]
    _sessions: dict[str, Any]  # amqtt's session table

    def now(self) -> float: ...

    async def _authenticate(self, session: Any, listener: Any) -> bool: ...

    async def _topic_filtering(self, session: Any, topic: str, action: Action) -> bool: ...

    async def reserve_session(self, device_id: str, key: str) -> bool: ...

    def touch_session(self, device_id: str, key: str) -> None: ...

    async def _delete_session(self, client_id: str) -> None: ...

    def ingest(self, device_id: str, topic: str, payload: bytes) -> asyncio.Future[Any] | None: ...

    def has_subscribers(self, topic: str) -> bool: ...

    async def _broadcast_message(
        self, session: Any, topic: str | None, data: Any, qos: Any = None
    ) -> None: ...

    async def add_subscription(self, subscription: tuple[str, int], session: Any) -> int: ...

    def _del_subscription(self, a_filter: str, session: Any) -> int: ...

    async def _del_all_subscriptions(self, session: Any) -> None: ...

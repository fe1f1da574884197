"""The small face both MQTT modes present to the rest of the gateway.

``mqtt.mode = "embedded"`` is :class:`gateway.broker.server.Broker` (our own broker);
``"external"`` is :class:`gateway.broker.external.ExternalBroker` (a client of the site's broker).
The site loop publishes notices through it, the status page reads it, the service starts and stops
it; none of them needs to know which one runs.
"""

from __future__ import annotations

from typing import Any, Protocol


class MqttFront(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...

    def connected(self, device_id: str) -> bool: ...

    @property
    def addresses(self) -> dict[str, tuple[str, int]]: ...

    def stats(self) -> dict[str, Any]: ...

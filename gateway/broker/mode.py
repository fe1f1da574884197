"""``mqtt.mode``: the embedded broker or a client of the site's broker, behind one face."""

from __future__ import annotations

from gateway.broker.amqtt_core import PublishHook
from gateway.broker.external import ExternalBroker
from gateway.broker.front import MqttFront
from gateway.broker.plugins import AuthCheck
from gateway.broker.server import Broker, mqtt_settings
from gateway.core.settings import Settings
from gateway.runtime.tasks import Supervise


def mqtt_front(
    settings: Settings, authenticate: AuthCheck, ingest: PublishHook, supervise: Supervise | None = None
) -> MqttFront:
    """Both take the same ingest hook; only the embedded one checks device credentials itself
    (with an external broker, its password file and ACLs do)."""
    if settings.mqtt.mode == "external":
        return ExternalBroker(settings.mqtt, f"ota-gateway-{settings.site}", ingest)
    return Broker(mqtt_settings(settings), authenticate, ingest, supervise)

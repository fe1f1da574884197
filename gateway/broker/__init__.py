"""The embedded MQTT broker (amqtt in the gateway's event loop): device identity, topic rules, bounds."""

from gateway.broker.server import Broker, mqtt_settings

__all__ = ["Broker", "mqtt_settings"]

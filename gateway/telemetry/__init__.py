"""Device metrics in: the MQTT hook and HTTP posts, validated (``gateway.core.metrics``), journaled, aggregated."""

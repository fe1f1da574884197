"""mDNS/DNS-SD (RFC 6762/6763): devices find the gateway, the gateway finds the devices.

- :mod:`gateway.discovery.txt`: TXT records, pure (parse a device's, build the gateway's).
- :mod:`gateway.discovery.net`: which interfaces, and the one shared zeroconf instance (:class:`Lan`).
- :mod:`gateway.discovery.advertise`: ``_ota-gateway._tcp`` and ``_mqtt._tcp``.
- :mod:`gateway.discovery.browse`: ``_ota-device._tcp`` into the inventory.
"""

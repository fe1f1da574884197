"""The reference device agent: what runs on a camera or a PLC box beside its inference app.

It knows nothing of the gateway's insides; it speaks only the outside contracts (DESIGN.md,
"Outside contracts") and so depends on ``aiohttp``, ``cryptography`` and ``paho-mqtt`` alone, never
on the server's rooms (``tests/agent/test_agent_house.py`` checks):

- :mod:`.slots`: the two A/B slot folders under a state folder and the atomic ``current`` pointer;
- :mod:`.verify`: sha256 and the cloud's detached signature (ECDSA P-256/SHA-256 DER, Ed25519);
- :mod:`.transfer`: a download that resumes with ``Range``/``If-Range``, also after a restart,
  bounded by the manifest's ``length`` and the free space of the state disk;
- :mod:`.poll`: what it makes of a poll answer (bounded, shape-checked, ``Retry-After`` clamped)
  and the words for why it waits;
- :mod:`.agent`: the flow: poll, download, verify, switch, report, obey rollbacks;
- :mod:`.metrics`: the reference metrics over MQTT (QoS 1) or HTTP, and MQTT update notices;
- :mod:`.simulate`: made-up inference figures and drift sketches for demos and tests (no model is
  run here; a knob shifts the drift features);
- :mod:`.cli`: ``ota-gateway device`` and ``python -m gateway.agent``.
"""

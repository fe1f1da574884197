"""The device agent stands apart from the server: a device installs it for ``aiohttp``,
``cryptography`` and ``paho-mqtt``, never for the broker, the store or mDNS. Of the gateway it
shares only pure core values: the error root, the bounded JSON parser, the signed statement's
format, the drift sketch's wire format, the limits of the shadow agreement message it sends, and the
metrics message and its one wire form (``gateway.core.metrics``, with the manifest's id rule it
checks by, and that module's chunk list type), and the device event its listeners are told
(``gateway.core.events``)."""

from __future__ import annotations

import subprocess
import sys

from tests.peers import ROOT

PROBE = """
import sys
import gateway.agent.agent, gateway.agent.cli, gateway.agent.simulate
ours = sorted(m for m in sys.modules if m.startswith("gateway.") and not m.startswith("gateway.agent"))
heavy = sorted(m for m in ("amqtt", "zeroconf", "psutil", "diskcache", "aiofiles") if m in sys.modules)
print(ours, heavy)
"""


def test_the_device_agent_imports_nothing_of_the_server() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (
        "['gateway.core', 'gateway.core.agreement', 'gateway.core.chunks', 'gateway.core.drift_sketch',"
        " 'gateway.core.errors', 'gateway.core.events', 'gateway.core.jsondoc', 'gateway.core.manifest',"
        " 'gateway.core.metrics',"
        " 'gateway.core.statement'] []"
    )

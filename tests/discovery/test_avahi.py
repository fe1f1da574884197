"""A tool no one here wrote sees the gateway: avahi-browse, through a private avahi-daemon.

avahi-daemon runs inside the device namespace with its own D-Bus bus (a private dbus-daemon on a
socket in a temporary folder) and its own /run (a tmpfs mounted in the mount namespace that
``ip netns exec`` gives it), so it touches neither the host's avahi nor the host's system bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.settings import DiscoverySettings
from gateway.discovery.advertise import Advertiser
from tests.discovery.netns import Lan, inside

pytestmark = [pytest.mark.netns, pytest.mark.peer]

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""
AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=yes
allow-interfaces={ifname}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
"""


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def avahi_bus(lan: Lan) -> AsyncIterator[str]:
    """A private avahi-daemon in the device namespace; yields its D-Bus address."""
    for tool in ("avahi-daemon", "avahi-browse", "dbus-daemon"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian avahi-daemon, avahi-utils, dbus-daemon)")
    folder = Path(tempfile.mkdtemp(prefix="avahi-"))
    socket = folder / "bus"
    (folder / "bus.conf").write_text(BUS_CONF.format(socket=socket))
    (folder / "avahi.conf").write_text(AVAHI_CONF.format(ifname=lan.dev.ifname))
    address = f"unix:path={socket}"
    procs: list[asyncio.subprocess.Process] = []
    try:
        bus = await asyncio.create_subprocess_exec(
            "dbus-daemon", f"--config-file={folder / 'bus.conf'}", "--nofork", "--nopidfile", "--print-address",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(bus)
        assert bus.stdout is not None
        line = await asyncio.wait_for(bus.stdout.readline(), 10)
        if not line:
            pytest.skip("dbus-daemon could not start a private bus")
        daemon = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", lan.dev.ns, "sh", "-c",
            'mount -t tmpfs tmpfs /run && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits '
            f'--no-proc-title -f {folder / "avahi.conf"}',
            env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(daemon)
        assert daemon.stderr is not None
        said: list[str] = []
        deadline = time.monotonic() + 15
        while not any("Server startup complete" in s for s in said):
            left = deadline - time.monotonic()
            raw = await asyncio.wait_for(daemon.stderr.readline(), max(left, 0.1)) if left > 0 else b""
            if not raw:
                pytest.skip("avahi-daemon cannot run in the namespace: " + " | ".join(said[-5:]))
            said.append(raw.decode(errors="replace").strip())
        yield address
    finally:
        for proc in reversed(procs):
            await _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _unescape(text: str) -> str:
    """avahi-browse -p escapes bytes in names as \\DDD (decimal)."""
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), text)


async def avahi_browse(lan: Lan, bus: str) -> list[list[str]]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", lan.dev.ns, "avahi-browse", "-rpt", "_ota-gateway._tcp",
        env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return [line.split(";") for line in out.decode().splitlines() if line.startswith("=")]


async def test_avahi_browse_sees_the_gateway(lan: Lan, avahi_bus: str) -> None:
    settings = DiscoverySettings(interfaces=(lan.gw.ifname,))
    with inside(lan.gw.ns):
        adv = Advertiser(
            settings, site="plant-7", http_port=8080, tls=False, mqtt_port=1883, cert_sha256=None
        )
        await adv.start()  # opens its own sockets, in the gateway namespace
    try:
        assert adv.name is not None
        instance = adv.name.removesuffix("._ota-gateway._tcp.local.")
        deadline = time.monotonic() + 20
        while True:
            rows = [r for r in await avahi_browse(lan, avahi_bus) if _unescape(r[3]) == instance]
            v4 = [r for r in rows if r[2] == "IPv4"]
            if v4:
                break
            assert time.monotonic() < deadline, "avahi-browse never listed the gateway"
        # =;iface;proto;name;type;domain;host;address;port;txt
        row = v4[0]
        assert row[4] == "_ota-gateway._tcp"
        assert row[7] == lan.gw.ipv4
        assert row[8] == "8080"
        txt = set(re.findall(r'"([^"]*)"', row[9]))
        assert {"site=plant-7", "api=/", "tls=0", "mqtt=1883", "txtvers=1"} <= txt
    finally:
        await adv.stop()

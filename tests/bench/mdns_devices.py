"""Benchmark: 1,000 devices advertising on the LAN; how fast the gateway has them all, at what CPU.

Run as root: ``/work/venv/bin/python tests/bench/mdns_devices.py [--count 1000]``.

Two network namespaces joined by a veth pair (as in tests/discovery). One python-zeroconf instance
in the device namespace registers N ``_ota-device._tcp`` services (cooperating responders, so no
probing) and waits until announced. Then, in the gateway namespace:

0. ours while N devices start (and announce three times each, RFC 6762 section 8.3) as the
   gateway browses: time from starting the device process until all N are in the inventory.
1. ours: the gateway's DeviceBrowser (python-zeroconf) starts with an empty cache and an in-memory
   Inventory; we time until all N devices are in the inventory and measure this process's
   CPU-seconds over that time (psutil). Then 10 s more of steady state on the same busy LAN.
2. the peer: a private avahi-daemon (own D-Bus bus, own /run) starts in the gateway namespace;
   ``avahi-browse -rp _ota-device._tcp`` is timed until it printed N resolved services, and the
   CPU-seconds of avahi-daemon plus avahi-browse over that time are measured.

Prints both and the ratio. Never asserts a time. Bounded: N <= 5000, each phase <= 120 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from gateway.core.settings import DiscoverySettings  # noqa: E402
from gateway.discovery.browse import DeviceBrowser  # noqa: E402
from gateway.discovery.net import open_lan  # noqa: E402
from gateway.inventory.store import Inventory  # noqa: E402
from tests.bench.common import cpu_seconds  # noqa: E402
from tests.discovery.netns import Lan, inside, make_lan, remove_lan  # noqa: E402
from tests.discovery.test_avahi import BUS_CONF  # noqa: E402

PHASE_LIMIT_S = 120.0
STEADY_S = 10.0
AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces={ifname}
enable-dbus=yes
cache-entries-max=50000
objects-per-client-max=50000
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
"""


async def ours(lan: Lan, count: int, spawn_devices: bool = False) -> tuple[float, float, float, int]:
    me = psutil.Process()
    settings = DiscoverySettings(interfaces=(lan.gw.ifname,), max_devices=max(10_000, count))
    inventory = Inventory(None, max_devices=max(100_000, count))
    with inside(lan.gw.ns):
        mdns = open_lan(settings)
    all_in = asyncio.Event()

    class Sink:
        """The inventory, plus an event when it holds every device."""

        def upsert(self, device_id: str, attrs: Mapping[str, str], *, source: str, now: float) -> None:
            inventory.upsert(device_id, attrs, source=source, now=now)
            if len(inventory.devices) >= count:
                all_in.set()

        def gone(self, device_id: str, *, source: str, now: float) -> None:
            inventory.gone(device_id, source=source, now=now)

    browser = DeviceBrowser(settings, Sink(), lan=mdns)
    cpu0, t0 = cpu_seconds([me]), time.perf_counter()
    await browser.start()
    if spawn_devices:  # the devices come up while the gateway browses: their announcements
        devices = await lan.spawn(lan.dev, "devices", "--ip", lan.dev.ipv4, "--count", str(count))
        await devices.expect("ready", timeout_s=PHASE_LIMIT_S)
    try:
        await asyncio.wait_for(all_in.wait(), PHASE_LIMIT_S)
    except TimeoutError:
        pass
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds([me]) - cpu0
    seen = len(inventory.devices)
    cpu1 = cpu_seconds([me])
    await asyncio.sleep(STEADY_S)  # the measurement window of the steady state
    steady = cpu_seconds([me]) - cpu1
    await browser.stop()
    await mdns.close()
    return elapsed, cpu, steady, seen


async def avahi(lan: Lan, count: int) -> tuple[float, float, int] | str:
    for tool in ("avahi-daemon", "avahi-browse", "dbus-daemon"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    folder = Path(tempfile.mkdtemp(prefix="avahi-bench-"))
    sock = folder / "bus"
    (folder / "bus.conf").write_text(BUS_CONF.format(socket=sock))
    (folder / "avahi.conf").write_text(AVAHI_CONF.format(ifname=lan.gw.ifname))
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={sock}"}
    procs: list[asyncio.subprocess.Process] = []
    try:
        bus = await asyncio.create_subprocess_exec(
            "dbus-daemon", f"--config-file={folder / 'bus.conf'}", "--nofork", "--nopidfile", "--print-address",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(bus)
        assert bus.stdout is not None
        await asyncio.wait_for(bus.stdout.readline(), 10)
        daemon = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", lan.gw.ns, "sh", "-c",
            "mount -t tmpfs tmpfs /run && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits "
            f"--no-proc-title -f {folder / 'avahi.conf'}",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(daemon)
        assert daemon.stderr is not None
        while True:
            line = await asyncio.wait_for(daemon.stderr.readline(), 15)
            if not line:
                return "avahi-daemon exited before start-up completed"
            if b"Server startup complete" in line:
                break
        avahi_proc = psutil.Process(daemon.pid)
        cpu0, t0 = cpu_seconds([avahi_proc]), time.perf_counter()
        browse = await asyncio.create_subprocess_exec(
            "avahi-browse", "-rp", "_ota-device._tcp", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(browse)
        browse_proc = psutil.Process(browse.pid)
        assert browse.stdout is not None
        resolved: set[str] = set()
        deadline = t0 + PHASE_LIMIT_S
        browse_cpu = 0.0
        while len(resolved) < count:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                raw = await asyncio.wait_for(browse.stdout.readline(), left)
            except TimeoutError:
                break
            if not raw:
                break
            fields = raw.decode(errors="replace").split(";")
            if fields[0] == "=" and fields[2] == "IPv4":
                resolved.add(fields[3])
            if len(resolved) >= count:
                browse_cpu = cpu_seconds([browse_proc])
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds([avahi_proc]) - cpu0 + (browse_cpu or cpu_seconds([browse_proc]))
        return elapsed, cpu, len(resolved)
    finally:
        for proc in reversed(procs):
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    count = max(1, min(args.count, 5000))
    if os.geteuid() != 0:
        print("needs root (network namespaces)")
        return 2
    lan = make_lan()
    try:
        elapsed, cpu, _, seen = await ours(lan, count, spawn_devices=True)
        print(
            f"ours, devices coming up while the gateway browses (incl. the device process start): "
            f"{seen}/{count} in {elapsed:.2f} s, {cpu:.2f} CPU-s"
        )
        await lan.stop_all()
        lan.procs.clear()
        devices = await lan.spawn(lan.dev, "devices", "--ip", lan.dev.ipv4, "--count", str(count))
        t0 = time.perf_counter()
        await devices.expect("ready", timeout_s=PHASE_LIMIT_S)
        print(
            f"{count} devices advertised in {time.perf_counter() - t0:.1f} s (python-zeroconf, one instance)"
        )

        elapsed, cpu, steady, seen = await ours(lan, count)
        print(
            f"ours  (python-zeroconf DeviceBrowser -> Inventory): {seen}/{count} in {elapsed:.2f} s, "
            f"{cpu:.2f} CPU-s; steady state {steady / STEADY_S * 100:.1f}% of a core over {STEADY_S:.0f} s"
        )
        peer = await avahi(lan, count)
        if isinstance(peer, str):
            print(f"peer  (avahi-daemon + avahi-browse -rp): not measured: {peer}")
            return 0
        p_elapsed, p_cpu, p_seen = peer
        print(
            f"peer  (avahi-daemon + avahi-browse -rp):          {p_seen}/{count} in {p_elapsed:.2f} s, {p_cpu:.2f} CPU-s"
        )
        print(f"ratio (ours / peer): time {elapsed / p_elapsed:.2f}x, CPU {cpu / max(p_cpu, 1e-3):.2f}x")
        return 0
    finally:
        await lan.stop_all()
        remove_lan(lan)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

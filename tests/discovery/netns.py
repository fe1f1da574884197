"""Two network namespaces joined by a veth pair: a private LAN for real multicast.

The test process stays in its own namespace but opens its zeroconf sockets inside the gateway's
namespace (:func:`inside`: setns(2) on this thread around the socket creation; a socket keeps the
namespace it was created in). The other side runs as a subprocess under ``ip netns exec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
CLONE_NEWNET = 0x40000000
_serial = count()


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(("netns", "exec", ns, "ip") if ns else ()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=10)


def _sysctl(ns: str, *settings: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "sysctl", "-qw", *settings], check=True, capture_output=True, timeout=10
    )


@dataclass
class Side:
    ns: str
    ifname: str
    ipv4: str

    def peer_cmd(self, *args: str) -> list[str]:
        """A command line running tests/discovery/peer.py inside this namespace."""
        return ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.discovery.peer", *args]


@dataclass
class Lan:
    gw: Side
    dev: Side
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def spawn(self, side: Side, *args: str) -> Peer:
        proc = await asyncio.create_subprocess_exec(
            *side.peer_cmd(*args),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.procs.append(proc)
        return Peer(proc)

    async def stop_all(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)


class Peer:
    """A peer subprocess speaking JSON lines: commands on stdin, events on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.unclaimed: list[dict[str, Any]] = []  # events read while waiting for another

    async def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, event: str, timeout_s: float = 15.0, **match: Any) -> dict[str, Any]:
        """The first event named ``event`` (and matching ``match``), read earlier or arriving now."""
        assert self.proc.stdout is not None

        def fits(msg: dict[str, Any]) -> bool:
            return msg.get("event") == event and all(msg.get(k) == v for k, v in match.items())

        for msg in self.unclaimed:
            if fits(msg):
                self.unclaimed.remove(msg)
                return msg
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {event!r} {match} from peer within {timeout_s} s")
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                continue
            if not line:
                err = b""
                if self.proc.stderr is not None:
                    err = await asyncio.wait_for(self.proc.stderr.read(), 5)
                raise AssertionError(f"peer exited before {event!r}: {err.decode(errors='replace')}")
            msg = json.loads(line)
            if fits(msg):
                return msg
            self.unclaimed.append(msg)


def make_lan() -> Lan:
    """Create two namespaces and a veth pair with IPv4 and link-local IPv6; raise if anything fails."""
    tag = f"{os.getpid() % 100000}{next(_serial)}"
    gw = Side(f"mdns-gw-{tag}", f"vg{tag}"[:15], "10.66.0.1")
    dev = Side(f"mdns-dv-{tag}", f"vd{tag}"[:15], "10.66.0.2")
    for side in (gw, dev):
        _ip("netns", "add", side.ns)
        # No duplicate address detection: the link-local IPv6 address is usable at once.
        _sysctl(side.ns, "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
        _ip("link", "set", "lo", "up", ns=side.ns)
    _ip("link", "add", gw.ifname, "netns", gw.ns, "type", "veth", "peer", "name", dev.ifname, "netns", dev.ns)
    for side in (gw, dev):
        _ip("addr", "add", f"{side.ipv4}/24", "dev", side.ifname, ns=side.ns)
        _ip("link", "set", side.ifname, "up", ns=side.ns)
        _ip("route", "add", "224.0.0.0/4", "dev", side.ifname, ns=side.ns)
    deadline = time.monotonic() + 10
    for side in (gw, dev):  # wait until the link-local address is there and not tentative
        while True:
            out = _ip("-6", "addr", "show", "dev", side.ifname, "scope", "link", ns=side.ns).stdout
            if "inet6" in out and "tentative" not in out:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no link-local IPv6 on {side.ifname}: {out}")
            time.sleep(0.05)  # polling the kernel's address state, not synchronising with our code
    return Lan(gw, dev)


def remove_lan(lan: Lan) -> None:
    for side in (lan.gw, lan.dev):
        _ip("netns", "del", side.ns, check=False)  # the veth pair goes with its namespaces


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace ``ns`` (sockets made here stay in it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{ns}") as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({ns})")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns(back home)")

"""Which interfaces mDNS uses, and the one zeroconf instance the gateway shares between its parts.

``discovery.interfaces`` lists addresses or interface names; empty means every non-loopback IPv4 and
IPv6 address of every interface that is up. :func:`resolve_interfaces` turns that into what
python-zeroconf takes (IPv4 addresses; IPv6 interface indexes, since IPV6_JOIN_GROUP needs an index)
and into the addresses we advertise in A/AAAA records. It is pure, fed the interface table, so it is
tested without a network. :func:`open_lan` reads the table (psutil), opens the sockets and returns a
:class:`Lan`; the advertiser and the browser share it (one set of sockets on port 5353, one cache).

The wire work (probing, announcing, caching, RFC 6762 timing) is python-zeroconf's.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psutil
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncZeroconf

from gateway.core.errors import ConfigError, TransportError
from gateway.core.settings import DiscoverySettings

IfAddrs = Mapping[str, Sequence[tuple[int, str]]]  # name -> [(family, address)]


@dataclass(frozen=True)
class Binding:
    """What zeroconf listens and sends on, and which addresses we advertise."""

    interfaces: tuple[str | int, ...]  # IPv4 addresses and IPv6 interface indexes, for zeroconf
    addresses: tuple[str, ...]  # to advertise (IPv6 without a zone)
    ip_version: IPVersion


def _strip_zone(address: str) -> str:
    return address.split("%", 1)[0]


def resolve_interfaces(
    entries: Sequence[str],
    if_addrs: IfAddrs,
    if_index: Callable[[str], int],
    up: Callable[[str], bool] = lambda name: True,
) -> Binding:
    """``discovery.interfaces`` against the host's interface table; ConfigError when nothing fits."""
    v4: dict[str, str] = {}  # interface name -> its first IPv4 address (one group join per interface)
    v6: dict[str, int] = {}  # interface name -> index
    addresses: list[str] = []

    def take(name: str, family: int, address: str) -> None:
        plain = _strip_zone(address)
        if family == socket.AF_INET:
            v4.setdefault(name, plain)
        elif family == socket.AF_INET6:
            v6.setdefault(name, if_index(name))
        else:
            return
        if plain not in addresses:
            addresses.append(plain)

    if not entries:
        for name, addrs in if_addrs.items():
            if not up(name):
                continue
            for family, address in addrs:
                if family in (socket.AF_INET, socket.AF_INET6):
                    if ipaddress.ip_address(_strip_zone(address)).is_loopback:
                        continue
                    take(name, family, address)
    for entry in entries:
        if entry in if_addrs:  # an interface name: all its addresses
            found = [(f, a) for f, a in if_addrs[entry] if f in (socket.AF_INET, socket.AF_INET6)]
            if not found:
                raise ConfigError(
                    "configuration", "discovery.interfaces", f"an interface with an address ({entry!r})"
                )
            for family, address in found:
                take(entry, family, address)
            continue
        try:
            wanted = ipaddress.ip_address(_strip_zone(entry))
        except ValueError:
            raise ConfigError(
                "configuration",
                "discovery.interfaces",
                f"an interface name or address of this host ({entry!r})",
            ) from None
        owner = next(
            (
                (name, family, address)
                for name, addrs in if_addrs.items()
                for family, address in addrs
                if family in (socket.AF_INET, socket.AF_INET6)
                and ipaddress.ip_address(_strip_zone(address)) == wanted
            ),
            None,
        )
        if owner is None:
            raise ConfigError(
                "configuration", "discovery.interfaces", f"an address this host has ({entry!r})"
            )
        name, family, address = owner
        if family == socket.AF_INET:
            # An explicit IPv4 address is joined as given, even beside another on the interface.
            v4[f"{name}/{address}"] = _strip_zone(address)
            if _strip_zone(address) not in addresses:
                addresses.append(_strip_zone(address))
        else:
            take(name, family, address)
    if not v4 and not v6:
        raise ConfigError(
            "configuration", "discovery.interfaces", "at least one non-loopback interface that is up"
        )
    version = IPVersion.All if v4 and v6 else IPVersion.V4Only if v4 else IPVersion.V6Only
    interfaces: tuple[str | int, ...] = (*dict.fromkeys(v4.values()), *dict.fromkeys(v6.values()))
    return Binding(interfaces=interfaces, addresses=tuple(addresses), ip_version=version)


def host_binding(settings: DiscoverySettings) -> Binding:
    """:func:`resolve_interfaces` against this host's table (psutil). Blocking, but quick."""
    table = {
        name: [(int(a.family), a.address) for a in addrs] for name, addrs in psutil.net_if_addrs().items()
    }
    stats = psutil.net_if_stats()
    return resolve_interfaces(
        settings.interfaces,
        table,
        socket.if_nametoindex,
        lambda name: name in stats and stats[name].isup,
    )


@dataclass(frozen=True)
class Lan:
    """One open zeroconf instance and what it is bound to. Close it once, after its users stopped."""

    aiozc: AsyncZeroconf
    binding: Binding

    async def close(self) -> None:
        await self.aiozc.async_close()


def open_lan(settings: DiscoverySettings) -> Lan:
    """Open the mDNS sockets on the configured interfaces; call on the event loop it will run on.

    ConfigError for an interface setting that fits nothing here; TransportError when the sockets
    cannot be opened (port 5353 or the multicast group refused).
    """
    binding = host_binding(settings)
    try:
        aiozc = AsyncZeroconf(interfaces=list(binding.interfaces), ip_version=binding.ip_version)
    except OSError as exc:
        raise TransportError(f"mDNS: cannot open sockets on {list(binding.interfaces)}: {exc}") from exc
    return Lan(aiozc=aiozc, binding=binding)

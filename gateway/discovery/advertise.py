"""Advertise the gateway on the LAN: ``_ota-gateway._tcp`` and ``_mqtt._tcp`` (RFC 6762, RFC 6763).

``_ota-gateway._tcp.local.`` points at the device HTTP(S) port; its TXT says what a device needs to
use it without any configuration: ``site``, ``api`` (path prefix of the device API), ``tls`` (0/1),
``mqtt`` (broker port) and, under TLS, ``fp``, the SHA-256 of the gateway's certificate (DER, hex)
so a device can pin it. ``_mqtt._tcp.local.`` points at the embedded broker.

Instance names are unique per gateway ("OTA Gateway <site> <host id>", the host id a short hash of
/etc/machine-id), and the names are probed before use (RFC 6762 section 8.1): on a conflict
python-zeroconf renames ours ("... -2") and probes again. Only the name is probed: a conflict that
appears after start-up (two gateways started within the same second with the same configured
instance) is not re-resolved (python-zeroconf does not implement RFC 6762 section 9).

The wire work is python-zeroconf's (asyncio API); this module decides names, TXT and when to send
updates and goodbyes (RFC 6762 section 10.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zeroconf import NonUniqueNameException
from zeroconf.asyncio import AsyncServiceInfo

from gateway.core.errors import ConfigError, TransportError
from gateway.core.settings import DiscoverySettings
from gateway.discovery.net import Lan, open_lan
from gateway.discovery.txt import gateway_txt

log = logging.getLogger(__name__)

GATEWAY_TYPE = "_ota-gateway._tcp.local."
MQTT_TYPE = "_mqtt._tcp.local."
MAX_LABEL_BYTES = 63  # a DNS label (RFC 6763 section 4.1.1: instance names up to 63 bytes)
MAX_RENAMES = 8
ANNOUNCE_TIMEOUT_S = 10.0  # probing (~1 s) plus three announcements (RFC 6762 section 8.3)


def short_host_id() -> str:
    """Six hex digits that tell this box from another: a hash of /etc/machine-id, or the host name."""
    try:
        seed = Path("/etc/machine-id").read_text().strip()
    except OSError:
        seed = ""
    return hashlib.sha256((seed or socket.gethostname()).encode()).hexdigest()[:6]


def cert_fingerprint(pem: bytes) -> str:
    """SHA-256 of the first certificate of a PEM chain, lower-case hex: the ``fp`` TXT value."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigError("configuration", "http.tls_cert", "a PEM certificate") from exc
    return cert.fingerprint(hashes.SHA256()).hex()


def _label(text: str) -> str:
    """Trim to one DNS label without splitting a UTF-8 character."""
    data = text.encode()[:MAX_LABEL_BYTES]
    return data.decode("utf-8", "ignore").strip()


def _host_label(instance: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", instance.lower()).strip("-")
    return (slug or "ota-gateway")[:MAX_LABEL_BYTES].strip("-")


@dataclass(frozen=True)
class _Spec:
    site: str
    http_port: int
    api_path: str
    tls: bool
    mqtt_port: int | None
    cert_sha256: str | None


class Advertiser:
    """Registers, updates and withdraws the gateway's two services on one shared :class:`Lan`.

    Pass ``lan`` to share the sockets with the device browser; without it, ``start`` opens its own
    (from ``settings.interfaces``) and ``stop`` closes it.
    """

    def __init__(
        self,
        settings: DiscoverySettings,
        *,
        site: str,
        http_port: int,
        api_path: str = "/",
        tls: bool,
        mqtt_port: int | None,
        cert_sha256: str | None,
        instance: str | None = None,
        lan: Lan | None = None,
    ) -> None:
        self.settings = settings
        self._spec = _Spec(site, http_port, api_path, tls, mqtt_port, cert_sha256)
        gateway_txt(site=site, api_path=api_path, tls=tls, mqtt_port=mqtt_port, cert_sha256=cert_sha256)
        self._instance = instance
        self._lan = lan
        self._own_lan = lan is None
        self._gateway: AsyncServiceInfo | None = None
        self._mqtt: AsyncServiceInfo | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str | None:
        """The registered ``_ota-gateway._tcp`` instance name (after any rename), or None."""
        return self._gateway.name if self._gateway else None

    @property
    def mqtt_name(self) -> str | None:
        return self._mqtt.name if self._mqtt else None

    async def start(self) -> None:
        """Probe, register and announce; returns when the announcements went out."""
        async with self._lock:
            if self._lan is None:
                self._lan = open_lan(self.settings)
            instance = self._instance
            if instance is None:
                host_id = await asyncio.to_thread(short_host_id)
                instance = f"OTA Gateway {self._spec.site} {host_id}"
            base = _label(instance)
            self._gateway = await self._register(self._info(GATEWAY_TYPE, base))
            # The broker takes the same (possibly renamed) instance name, so the two read as a pair.
            if self._spec.mqtt_port is not None:
                self._mqtt = await self._register(self._info(MQTT_TYPE, self._instance_of(self._gateway)))
            log.info(
                "mDNS: advertising %r on port %d (%s)",
                self._gateway.name,
                self._spec.http_port,
                ", ".join(self._lan.binding.addresses),
            )

    async def update(self, **changed: Any) -> None:
        """Change site, http_port, api_path, tls, mqtt_port or cert_sha256; re-announce what changed."""
        async with self._lock:
            unknown = set(changed) - set(_Spec.__dataclass_fields__)
            if unknown:
                raise TypeError(f"unknown advertised fields: {sorted(unknown)}")
            new = replace(self._spec, **changed)
            if new == self._spec:
                return
            gateway_txt(
                site=new.site,
                api_path=new.api_path,
                tls=new.tls,
                mqtt_port=new.mqtt_port,
                cert_sha256=new.cert_sha256,
            )
            old, self._spec = self._spec, new
            if self._gateway is None:
                return  # not started: start() advertises the new values
            aiozc = self._aiozc()
            info = self._info(GATEWAY_TYPE, self._instance_of(self._gateway))
            if info.text != self._gateway.text or info.port != self._gateway.port:
                self._gateway = info
                await self._wait(await aiozc.async_update_service(info))
            if new.mqtt_port != old.mqtt_port:
                if self._mqtt is not None:
                    await self._wait(await aiozc.async_unregister_service(self._mqtt))
                    self._mqtt = None
                if new.mqtt_port is not None:
                    self._mqtt = await self._register(self._info(MQTT_TYPE, self._instance_of(self._gateway)))
            elif self._mqtt is not None and new.site != old.site:
                info = self._info(MQTT_TYPE, self._instance_of(self._mqtt))
                self._mqtt = info
                await self._wait(await aiozc.async_update_service(info))

    async def stop(self) -> None:
        """Send goodbyes (TTL 0, RFC 6762 section 10.1) and, if we opened it, close the Lan."""
        async with self._lock:
            if self._lan is not None:
                aiozc = self._lan.aiozc
                for info in (self._mqtt, self._gateway):
                    if info is not None:
                        with contextlib.suppress(Exception):
                            await self._wait(await aiozc.async_unregister_service(info))
                self._mqtt = self._gateway = None
                if self._own_lan:
                    await self._lan.close()
                    self._lan = None

    # -- internals ----------------------------------------------------------------------------------

    def _aiozc(self) -> Any:
        assert self._lan is not None
        return self._lan.aiozc

    @staticmethod
    def _instance_of(info: AsyncServiceInfo) -> str:
        return info.name[: -len(info.type) - 1]

    def _info(self, type_: str, instance: str) -> AsyncServiceInfo:
        assert self._lan is not None
        s = self._spec
        if type_ == GATEWAY_TYPE:
            port = s.http_port
            txt = gateway_txt(
                site=s.site, api_path=s.api_path, tls=s.tls, mqtt_port=s.mqtt_port, cert_sha256=s.cert_sha256
            )
        else:
            assert s.mqtt_port is not None
            port = s.mqtt_port
            txt = {"txtvers": "1", "site": s.site}
        return AsyncServiceInfo(
            type_,
            f"{instance}.{type_}",
            port=port,
            properties=txt,
            server=f"{_host_label(instance)}.local.",
            parsed_addresses=list(self._lan.binding.addresses),
        )

    async def _register(self, info: AsyncServiceInfo) -> AsyncServiceInfo:
        """Probe for the name (renaming ``-2``, ``-3``... on a conflict), then register and announce.

        Probing first and registering after lets the host name follow the final instance name, so
        a renamed gateway never announces address records under the other gateway's host name.
        """
        zc = self._aiozc().zeroconf
        wanted = info.name
        try:
            await asyncio.wait_for(zc.async_wait_for_start(), ANNOUNCE_TIMEOUT_S)
            for _attempt in range(MAX_RENAMES):
                try:
                    await asyncio.wait_for(
                        zc.async_check_service(info, allow_name_change=True), ANNOUNCE_TIMEOUT_S
                    )
                except NonUniqueNameException:
                    # Only raised when zeroconf may not rename (it may here); kept so a change of
                    # library behaviour still ends in a unique name rather than a crash.
                    info = self._info(info.type, f"{self._instance_of(info)}-x")
                    continue
                break
            else:
                raise TransportError(f"mDNS: no free name for {wanted!r} after {MAX_RENAMES} tries")
            if info.name != wanted:
                log.warning("mDNS: the name %r is taken on this LAN; advertising as %r", wanted, info.name)
                info = self._info(info.type, self._instance_of(info))
            # Probed above: register without probing again (RFC 6762 section 8.1 done once).
            announced = await asyncio.wait_for(
                self._aiozc().async_register_service(info, cooperating_responders=True), ANNOUNCE_TIMEOUT_S
            )
        except TimeoutError as exc:
            raise TransportError(f"mDNS: probing or registering {info.name!r} timed out") from exc
        await self._wait(announced)
        return info

    @staticmethod
    async def _wait(aw: Awaitable[Any]) -> None:
        try:
            await asyncio.wait_for(aw, ANNOUNCE_TIMEOUT_S)
        except TimeoutError:
            log.warning("mDNS: announcements did not finish within %.0f s", ANNOUNCE_TIMEOUT_S)

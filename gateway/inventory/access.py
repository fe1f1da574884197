"""Who a device is, and whether it may talk to us: one set of credentials for HTTP and MQTT.

Modes (``devices.access``):

* ``open``: labs and trusted LANs only; any device id is believed, but each id is bound to the
  address it first spoke from (:class:`OpenBindings`) until it falls silent for
  ``devices.open_binding_ttl_s``, and writes (metrics, events) for it from any other address are
  refused. Over MQTT an anonymous client is named by its client id (or user name) and, as in every
  mode, held to its own topics.
* ``token``: ``Authorization: Bearer <token>`` (HTTP) or MQTT password; a per-device token from
  ``devices.tokens_file`` (``{"<device id>": "<token>"}``) or the one ``devices.site_token``.
* ``mtls``: the device's client certificate (signed by ``http.client_ca``); its CN is its id.

``devices.allow_unknown = false`` refuses devices that are in neither the tokens file nor the
site inventory.

Child gateways (tiers) are not devices: :class:`ChildCredentials` knows each child's own secret
(``mirror.child_tokens``, ``"<site>=<secret>"``) or, in mTLS, a client certificate whose CN is
``gateway.<site>``, for a site in ``mirror.child_sites``. Only such a credential relays that site's
records or announces it as a child gateway; it also reads what any device credential may read. Tokens are compared in constant time. The decisions are pure
(:meth:`Credentials.check`, :meth:`Credentials.mqtt_allows`, :class:`OpenBindings` with ``now``
passed in); the HTTP shell turns a :class:`Refusal` into 401/403 with its reason, the broker a
``False`` into a refused CONNECT.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError
from gateway.core.manifest import valid_id
from gateway.core.settings import DeviceSettings


def peer_cn(ssl_object: Any) -> str | None:
    """The CN of a TLS peer's verified certificate (``ssl.SSLObject``), or None."""
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@dataclass(frozen=True)
class Refusal:
    status: int  # 401 (who are you?) or 403 (not you / not allowed)
    reason: str


def load_tokens(path: str) -> dict[str, str]:
    if not path:
        return {}
    try:
        doc = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(path, "(file)", f"a readable JSON tokens file ({exc.strerror})") from exc
    except ValueError as exc:
        raise ConfigError(path, "(syntax)", f"valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(path, "(top level)", '{"<device id>": "<token>", ...}')
    for k, v in doc.items():
        if not valid_id(k) or not isinstance(v, str) or len(v) < 8:
            raise ConfigError(path, k, "a device id mapped to a token string of at least 8 characters")
    return dict(doc)


CHILD_CN_PREFIX = "gateway."


class ChildCredentials:
    """Which child site a credential belongs to, if any. Pure: built from the settings' values."""

    def __init__(self, child_sites: tuple[str, ...], child_tokens: tuple[str, ...]) -> None:
        self.sites = frozenset(child_sites)
        self._by_digest: dict[bytes, str] = {}
        for entry in child_tokens:
            site, _, secret = entry.partition("=")
            if site not in self.sites:
                raise ConfigError(
                    "configuration", "mirror.child_tokens", f"sites of mirror.child_sites, not {site!r}"
                )
            digest = hashlib.sha256(secret.encode()).digest()
            if digest in self._by_digest or site in self._by_digest.values():
                raise ConfigError(
                    "configuration", "mirror.child_tokens", "one secret per child site, each its own"
                )
            self._by_digest[digest] = site

    def site_of(self, *, bearer: str | None, cert_cn: str | None) -> str | None:
        """The child site this credential is for; None: not a child gateway's credential."""
        if cert_cn is not None and cert_cn.startswith(CHILD_CN_PREFIX):
            site = cert_cn[len(CHILD_CN_PREFIX) :]
            if site in self.sites:
                return site
        if bearer is None:
            return None
        # Keyed by a hash of the secret, as check_any: the lookup's timing tells nothing useful.
        return self._by_digest.get(hashlib.sha256(bearer.encode()).digest())


class Credentials:
    def __init__(self, settings: DeviceSettings, known_devices: Mapping[str, object] | None = None) -> None:
        self.mode = settings.access
        self.site_token = settings.site_token
        self.allow_unknown = settings.allow_unknown
        self.tokens = load_tokens(settings.tokens_file)
        self.known = known_devices if known_devices is not None else {}
        secrets = [*self.tokens.values(), *([self.site_token] if self.site_token else [])]
        self._digests = {hashlib.sha256(t.encode()).digest() for t in secrets}
        self.bindings = OpenBindings(settings.open_binding_ttl_s, settings.max_devices)

    def token_for(self, device_id: str) -> str | None:
        """The secret a device must present (the broker uses this too); None: no such device."""
        if device_id in self.tokens:
            return self.tokens[device_id]
        if self.site_token and (self.allow_unknown or device_id in self.known):
            return self.site_token
        return None

    def check(self, device_id: str, *, bearer: str | None, cert_cn: str | None) -> Refusal | None:
        """None when ``device_id`` may proceed."""
        if self.mode == "open":
            if not self.allow_unknown and device_id not in self.known and device_id not in self.tokens:
                return Refusal(403, f"device {device_id!r} is not in this site's inventory")
            return None
        if self.mode == "mtls":
            if cert_cn is None:
                return Refusal(401, "a client certificate signed by the site CA is required")
            if cert_cn != device_id:
                return Refusal(403, f"the certificate is for {cert_cn!r}, not {device_id!r}")
            if not self.allow_unknown and device_id not in self.known and device_id not in self.tokens:
                return Refusal(403, f"device {device_id!r} is not in this site's inventory")
            return None
        if bearer is None:
            return Refusal(401, "Authorization: Bearer <device token> is required")
        expected = self.token_for(device_id)
        if expected is None:
            return Refusal(403, f"device {device_id!r} is not known to this site")
        if not hmac.compare_digest(bearer.encode(), expected.encode()):
            return Refusal(403, "wrong token for this device")
        return None

    def check_any(self, *, bearer: str | None, cert_cn: str | None) -> Refusal | None:
        """For downloads: any valid device credential (model files are company property)."""
        if self.mode == "open":
            return None
        if self.mode == "mtls":
            return (
                None
                if cert_cn is not None
                else Refusal(401, "a client certificate signed by the site CA is required")
            )
        if bearer is None:
            return Refusal(401, "Authorization: Bearer <device token> is required")
        # A set of token digests: O(1) per download whatever the fleet size, and a lookup keyed
        # by a hash of the secret leaks nothing useful through its timing.
        if hashlib.sha256(bearer.encode()).digest() in self._digests:
            return None
        return Refusal(403, "unknown token")

    def mqtt_allows(
        self, device_id: str | None, password: str | None, cert_cn: str | None, *, lab_mode: bool
    ) -> bool:
        """The broker's identity check for the device a CONNECT claims to be (its user name, its
        certificate CN, or for an anonymous client its client id): the same credentials as HTTP.

        ``lab_mode`` lets anything in (still held to its own topics by the broker). In ``open`` mode
        any client is believed, as on HTTP; a certificate the site CA signed is a device credential
        whatever the mode.
        """
        if lab_mode:
            return True
        if device_id is None or not valid_id(device_id):
            return False
        if cert_cn is not None and cert_cn == device_id:
            return self._may_be_unknown(device_id)
        if self.mode == "open":
            return self._may_be_unknown(device_id)
        if self.mode == "mtls":
            return False
        return password is not None and self.check(device_id, bearer=password, cert_cn=None) is None

    def _may_be_unknown(self, device_id: str) -> bool:
        return self.allow_unknown or device_id in self.known or device_id in self.tokens


class _Binding:
    """The address an id is held to, and when the id was last active from it."""

    __slots__ = ("address", "last")

    def __init__(self, address: str, last: float) -> None:
        self.address = address
        self.last = last


class OpenBindings:
    """``open`` mode's one defence: a device id belongs to the address it first spoke from.

    A poll (or a write) from an address binds an unbound or expired id to it; activity from that
    address keeps the binding alive; after ``ttl_s`` of silence the id is free again (a device that
    got a new DHCP lease recovers by itself). Writes for a bound id from any other address are
    refused. The table holds at most ``max_entries`` ids: when full, expired bindings go first, then
    the least recently active ones. Pure: ``now`` is passed in, nothing is read or written.

    Activity is recorded in place (every poll of the site refreshes its binding: one time written
    into the entry it has just read), so the table is ordered by when each id was bound, not by
    activity; expired bindings are dropped from its front as new ones come, and when it overflows
    it is sorted once and keeps the most recently active seven eighths (a sort per
    ``max_entries / 8`` new ids, not a scan each).
    """

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._bound: dict[str, _Binding] = {}  # oldest bound first

    def __len__(self) -> int:
        return len(self._bound)

    def bound_to(self, device_id: str, now: float) -> str | None:
        entry = self._bound.get(device_id)
        if entry is None or now - entry.last > self.ttl_s:
            return None
        return entry.address

    def seen(self, device_id: str, address: str | None, now: float) -> Refusal | None:
        """A request for ``device_id`` from ``address``: binds or refreshes, or says why not.

        ``None`` from the caller's side (no peer address, e.g. a Unix socket) neither binds nor
        is refused: there is no address to hold it to.
        """
        if address is None:
            return None
        bound = self._bound
        entry = bound.get(device_id)
        if entry is not None and now - entry.last <= self.ttl_s:
            if entry.address != address:
                return Refusal(
                    403,
                    f"device {device_id!r} is bound to another address (devices.access = 'open' holds "
                    f"an id to the address it first used until it is silent for {self.ttl_s:g} s)",
                )
            entry.last = now  # the owner again: refreshed in place, no write to the table
            return None
        if entry is not None:
            del bound[device_id]  # expired: bound anew, at the back
        bound[device_id] = _Binding(address, now)
        self._trim(now)
        return None

    def _trim(self, now: float) -> None:
        bound = self._bound
        while bound:
            device_id, oldest = next(iter(bound.items()))
            if now - oldest.last <= self.ttl_s:
                break
            del bound[device_id]
        if len(bound) > self.max_entries:
            keep = self.max_entries - self.max_entries // 8
            newest = sorted(bound.items(), key=lambda item: item[1].last, reverse=True)[:keep]
            bound.clear()
            bound.update(reversed(newest))

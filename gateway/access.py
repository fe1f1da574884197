"""Who a device is, and whether it may talk to us: one set of credentials for HTTP and MQTT.

Modes (``devices.access``):

* ``open``: labs only; any device id is believed.
* ``token``: ``Authorization: Bearer <token>`` (HTTP) or MQTT password; a per-device token from
  ``devices.tokens_file`` (``{"<device id>": "<token>"}``) or the one ``devices.site_token``.
* ``mtls``: the device's client certificate (signed by ``http.client_ca``); its CN is its id.

``devices.allow_unknown = false`` refuses devices that are in neither the tokens file nor the
site inventory. Tokens are compared in constant time. The decision is pure (:func:`check`); the
HTTP shell turns it into 401/403 with a reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.manifest import valid_id
from gateway.settings import DeviceSettings


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


class Credentials:
    def __init__(self, settings: DeviceSettings, known_devices: Mapping[str, object] | None = None) -> None:
        self.mode = settings.access
        self.site_token = settings.site_token
        self.allow_unknown = settings.allow_unknown
        self.tokens = load_tokens(settings.tokens_file)
        self.known = known_devices if known_devices is not None else {}
        secrets = [*self.tokens.values(), *([self.site_token] if self.site_token else [])]
        self._digests = {hashlib.sha256(t.encode()).digest() for t in secrets}

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

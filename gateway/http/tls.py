"""The device API's TLS: a server context from ``http.tls_cert``/``tls_key``, and client
certificates from ``http.client_ca`` (optional, or required when ``devices.access = "mtls"``).

Only the context is made here; which certificate names which device is :mod:`gateway.inventory.access`'s.
"""

from __future__ import annotations

import ssl

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings


def server_tls(settings: Settings) -> ssl.SSLContext | None:
    """None when the device API speaks plain HTTP; ConfigError naming ``http.tls_cert`` when the
    certificate, key or client CA cannot be read."""
    s = settings.http
    if not s.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(s.tls_cert, s.tls_key)
        if s.client_ca:
            ctx.load_verify_locations(s.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL if settings.devices.access != "mtls" else ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "configuration", "http.tls_cert", f"a readable PEM certificate and key ({exc})"
        ) from exc
    return ctx

"""``python -m gateway.service.healthcheck``: exit 0 when the gateway of this configuration is ready.

For a container's ``HEALTHCHECK`` (and any supervisor without systemd): it reads the configuration
exactly as ``serve`` does (``--config``, else ``$OTA_GATEWAY_CONFIG``, and the ``OTA_GATEWAY_*``
environment), then asks ``/readyz`` on the operator port (with ``operator.token`` when one is set),
or on the device port when the operator API is off. A wildcard address is asked on loopback. It
prints the reasons when not ready and exits 1; a configuration it cannot read exits 2.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.core.setting_rules import parse_hostport
from gateway.core.settings import Settings
from gateway.service import settings as settings_mod

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def readyz_request(s: Settings) -> urllib.request.Request:
    """The /readyz request for these settings: the operator port first, else the device port."""
    listen, scheme, headers = s.operator.listen, "http", {}
    if listen:
        if s.operator.token:
            headers["Authorization"] = f"Bearer {s.operator.token}"
    else:
        listen, scheme = s.http.listen, "https" if s.http.tls_cert else "http"
    host, port = parse_hostport(listen)
    host = WILDCARDS.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return urllib.request.Request(f"{scheme}://{shown}:{port}/readyz", headers=headers)


def _context(request: urllib.request.Request) -> ssl.SSLContext | None:
    """The device port over HTTPS, asked on this box: its certificate names the LAN name, not
    loopback, and the request carries no secret, so it is not checked. (With devices.access =
    "mtls" the device port wants a client certificate: keep the operator API on for this check.)"""
    if not request.full_url.startswith("https:"):
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.service.healthcheck", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $OTA_GATEWAY_CONFIG)")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    args = parser.parse_args(argv)
    try:
        s = settings_mod.load(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"healthcheck: configuration error: {exc}", file=sys.stderr)
        return 2
    request = readyz_request(s)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout, context=_context(request)) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            reasons = json.loads(exc.read()).get("reasons", [])
        except ValueError:
            reasons = [f"HTTP {exc.code}"]
        print(f"healthcheck: not ready: {'; '.join(reasons) or exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {request.full_url} did not answer ({exc})", file=sys.stderr)
        return 1
    print("healthcheck: ready" if doc.get("ready") else f"healthcheck: {doc}")
    return 0 if doc.get("ready") else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the configuration names in files of its own, read in one step before anything is built.

The trusted keys (``trust.trusted_keys``), the site inventory file, the compatibility matrix, the
device tokens file, the TLS certificate (for its mDNS fingerprint) and the upstream (a folder
upstream must exist). :meth:`ConfigFiles.read` does this blocking I/O once, the way python-tuf's
``Metadata.from_file`` does; the gateway's constructor takes the values and touches no disk, and
nothing here reads or writes the data folder (that waits for its lock, in ``Gateway.start``).
A bad file stops start-up with one line naming it (:class:`~gateway.core.errors.ConfigError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_compat.matrix import CompatMatrix
from gateway.core.settings import Settings
from gateway.discovery.advertise import cert_fingerprint
from gateway.inventory.access import Credentials
from gateway.inventory.store import load_inventory_file
from gateway.mirror.open_upstream import upstream_from
from gateway.mirror.upstream import Upstream
from gateway.service.settings import load_matrix
from gateway.trust.keys import PublicKey, load_trusted_keys
from gateway.trust.tuf_state import trusted_root


@dataclass(frozen=True)
class ConfigFiles:
    keys: dict[str, PublicKey]
    site_inventory: dict[str, dict[str, str]]
    credentials: Credentials
    upstream: Upstream
    matrix: CompatMatrix | None = None
    cert_sha256: str | None = None
    tuf_root: bytes | None = None  # trust.tuf_root's bytes, on a TUF site

    @classmethod
    def read(cls, settings: Settings) -> ConfigFiles:
        """Blocking: every file the settings name, read and checked."""
        devices = settings.devices
        site_inventory = load_inventory_file(Path(devices.inventory_file)) if devices.inventory_file else {}
        cert = settings.http.tls_cert
        return cls(
            keys=load_trusted_keys([Path(p) for p in settings.trust.trusted_keys], "configuration"),
            site_inventory=site_inventory,
            credentials=Credentials(devices, site_inventory),
            upstream=upstream_from(settings.mirror, site=settings.site),
            matrix=load_matrix(Path(devices.compat_matrix)) if devices.compat_matrix else None,
            cert_sha256=cert_fingerprint(Path(cert).read_bytes()) if cert else None,
            tuf_root=trusted_root(settings.trust) if settings.trust.format == "tuf" else None,
        )

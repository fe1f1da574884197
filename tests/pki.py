"""Test certificates, in one place: a site CA that issues a server certificate and client
certificates, written as PEM files for the TLS tests (the broker's TLS listener, the device API
over HTTPS, mosquitto and paho as clients).

ECDSA P-256, valid from a day ago for thirty days; ``<name>.pem`` and ``<name>.key`` (PKCS#8, not
encrypted) in the folder given. A client certificate's CN is the device id.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Issued:
    """One certificate and its key, in memory and on disk."""

    cert: Path
    key: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def pair(self) -> tuple[str, str]:
        """``(cert, key)`` as strings, the order ``ssl.SSLContext.load_cert_chain`` takes."""
        return str(self.cert), str(self.key)


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue(
    folder: Path,
    name: str,
    *,
    cn: str | None = None,
    issuer: Issued | None = None,
    ca: bool = False,
    hosts: Iterable[str] = (),
) -> Issued:
    """Make ``folder/<name>.pem`` and ``folder/<name>.key``; self-signed when ``issuer`` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    alt = [_alt_name(h) for h in hosts]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(issuer.private_key if issuer else key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Issued(cert_path, key_path, cert, key)


@dataclass(frozen=True)
class SitePki:
    ca: Issued
    server: Issued
    clients: dict[str, Issued]


def site_pki(
    folder: Path,
    clients: Iterable[str] = ("dev1",),
    *,
    server_cn: str = "gateway",
    hosts: Iterable[str] = ("localhost", "127.0.0.1"),
) -> SitePki:
    """A site CA (``ca``), the gateway's server certificate (``server``) for ``hosts``, and one
    client certificate per device id, each issued by the CA."""
    ca = issue(folder, "ca", cn="site CA", ca=True)
    server = issue(folder, "server", cn=server_cn, issuer=ca, hosts=hosts)
    return SitePki(ca, server, {c: issue(folder, c, issuer=ca) for c in clients})

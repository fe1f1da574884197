"""Public keys the gateway trusts, and signature checks exactly as a device agent makes them.

Artifact and index signatures are ECDSA P-256 over SHA-256 (DER) or Ed25519, made by the cloud.
The gateway only verifies; signing lives in :mod:`gateway.registry` (the cloud side tool).
A key is named by its ``keyid``: the hex sha256 of its DER SubjectPublicKeyInfo, the same for
every holder of the key, so signatures can say which key made them.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from gateway.core.errors import ConfigError, FormatError, UntrustedError

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
MAX_SIGNATURE_BYTES = 512  # DER ECDSA P-256 is at most 72 bytes, Ed25519 exactly 64


def keyid(key: PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_pem(key: PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


PRIVATE_KEY_ADVICE = (
    "a PUBLIC key: this file holds a PRIVATE key, which signs models and belongs with the registry "
    "tool only (the gateway never signs); remove it and copy the matching public.pem instead"
)


def holds_private_key(pem: bytes) -> bool:
    """Whether a PEM file holds a private key (``-----BEGIN ... PRIVATE KEY-----``)."""
    return b"PRIVATE KEY-----" in pem


def parse_public_key(pem: bytes, what: str) -> PublicKey:
    """A PEM public key of an accepted kind; FormatError otherwise."""
    if holds_private_key(pem):
        raise FormatError(f"{what}: expected {PRIVATE_KEY_ADVICE}")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise FormatError(f"{what}: not a PEM public key") from exc
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise FormatError(f"{what}: only ECDSA P-256 and Ed25519 keys are accepted")


def load_trusted_keys(paths: list[Path], source: str) -> dict[str, PublicKey]:
    """Configured key files -> {keyid: key}; a bad file is a ConfigError naming it."""
    keys: dict[str, PublicKey] = {}
    for path in paths:
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                source, "trust.trusted_keys", f"a readable PEM file at {path} ({exc.strerror})"
            ) from exc
        if holds_private_key(pem):
            raise ConfigError(source, "trust.trusted_keys", f"{PRIVATE_KEY_ADVICE} ({path})")
        try:
            key = parse_public_key(pem, str(path))
        except FormatError as exc:
            raise ConfigError(
                source, "trust.trusted_keys", f"an ECDSA P-256 or Ed25519 public key in {path}"
            ) from exc
        keys[keyid(key)] = key
    return keys


def verify_bytes(key: PublicKey, signature: bytes, data: bytes | memoryview) -> bool:
    """True when ``signature`` is ``key``'s over ``data`` (ECDSA/SHA-256 DER, or Ed25519)."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify_file(keys: Mapping[str, PublicKey], signature: bytes, path: Path, sha256_hex: str) -> str:
    """Check a detached signature over a file; returns the keyid that made it.

    ECDSA verifies the sha256 we already computed (``Prehashed``: the same signature a device
    checks over the whole file). Ed25519 has no prehashed form, so the file is mapped, not read.
    Blocking: call from a worker thread.
    """
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise UntrustedError(f"{path.name}: signature of {len(signature)} bytes is not a signature")
    digest = bytes.fromhex(sha256_hex)
    mapped: mmap.mmap | None = None
    try:
        for kid, key in keys.items():
            if isinstance(key, ed25519.Ed25519PublicKey):
                if mapped is None:
                    with path.open("rb") as f:
                        mapped = (
                            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else None
                        )
                if mapped is None:
                    ok = verify_bytes(key, signature, b"")
                else:
                    with memoryview(mapped) as view:  # released before the map is closed
                        ok = verify_bytes(key, signature, view)
                if ok:
                    return kid
                continue
            try:
                key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            except InvalidSignature:
                continue
            return kid
    finally:
        if mapped is not None:
            mapped.close()
    raise UntrustedError(f"{path.name}: signature made by no trusted key")

"""The device's own check of an artifact, end to end with the cloud's key (DESIGN.md, trust model).

A gateway may delay or withhold an update; it cannot make a device install bytes the cloud did not
sign, because the device checks the sha256 of the manifest and the detached signature with the
cloud's public key itself: ECDSA P-256 over SHA-256 (DER), checked on the digest already computed
(``Prehashed``, so a large model is read once), or Ed25519 (which signs the whole message).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from gateway.agent.errors import AgentError, VerifyError

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def load_public_key(pem: bytes) -> PublicKey:
    """The cloud's public key (PEM); only the two algorithms the registry signs with."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise AgentError(f"the cloud's public key does not parse as PEM ({exc})") from exc
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise AgentError("the cloud's public key must be ECDSA P-256 or Ed25519")


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def verify_artifact(key: PublicKey, path: Path, signature: bytes, sha256_hex: str) -> None:
    """Raise :class:`VerifyError` unless ``path`` has the manifest's sha256 and the cloud's signature."""
    digest = sha256_file(path)
    if digest.hex() != sha256_hex.lower():
        raise VerifyError(f"sha256 mismatch: got {digest.hex()}, the manifest says {sha256_hex}")
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        else:
            key.verify(signature, path.read_bytes())
    except InvalidSignature as exc:
        raise VerifyError("bad signature: not signed by the cloud's key") from exc

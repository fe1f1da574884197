"""The cloud side in miniature: make keys, publish signed models into a registry folder.

For tests, air-gapped sites and small fleets without a cloud registry. The registry is plain
files, servable by nginx, S3, ``python -m http.server``, or used as a folder upstream::

    REGISTRY/index.json                                fleet index (publish without --site)
    REGISTRY/sites/<site>/index.json                   a site's own index
    REGISTRY/keys.json                                 optional signed key list (rotation)
    REGISTRY/artifacts/<model_id>/<version>/<file>     the model, as published
    REGISTRY/artifacts/<model_id>/<version>/<file>.sig detached signature (DER ECDSA or Ed25519)
    REGISTRY/artifacts/<model_id>/<version>/<file>.chunks  the chunk list (raw SHA-256 per chunk)

Artifact URLs in the index are relative to the registry root. No private key is ever written
inside the registry folder: the tool refuses a key path there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from firmware_compat.version import try_version
from gateway.core import chunks, statement
from gateway.core.chunks import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from gateway.core.errors import ConfigError, FormatError
from gateway.core.manifest import HEALTH_KEYS, format_time, parse_deployment, parse_time, valid_id
from gateway.runtime import atomic
from gateway.trust.canonical import canonical_json
from gateway.trust.keys import keyid, public_pem

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
ALGORITHMS = ("ecdsa-p256", "ed25519")
DEFAULT_EXPIRES_S = 30 * 86400
DEFAULT_KEEP = 2  # deployments of one model and cohort an index keeps listing (rollback needs two)


def keygen(key_dir: Path, algorithm: str = "ecdsa-p256") -> tuple[Path, Path]:
    """Write ``private.pem`` (mode 0600) and ``public.pem``; refuses to overwrite a private key."""
    if algorithm not in ALGORITHMS:
        raise ConfigError("command line", "--algorithm", " or ".join(ALGORITHMS))
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ecdsa-p256"
        else (ed25519.Ed25519PrivateKey.generate())
    )
    key_dir.mkdir(parents=True, exist_ok=True)
    private, public = key_dir / "private.pem", key_dir / "public.pem"
    if private.exists():
        raise ConfigError("command line", "KEY_DIR", f"a folder without a private key ({private} exists)")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic.write_bytes(private, pem, mode=0o600)
    atomic.write_bytes(public, public_pem(key.public_key()).encode())
    return private, public


def load_private_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError("command line", "--key", f"an unencrypted PEM private key at {path}") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ConfigError("command line", "--key", "an ECDSA P-256 or Ed25519 private key")


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def envelope(signed: Mapping[str, Any], key: PrivateKey) -> bytes:
    sig = sign(key, canonical_json(signed))
    doc = {
        "signed": signed,
        "signatures": [{"keyid": keyid(key.public_key()), "sig": base64.b64encode(sig).decode()}],
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def statement_envelope(
    key: PrivateKey, manifest: Mapping[str, Any], rollback_target: bool = False
) -> dict[str, Any]:
    """The DSSE statement binding the manifest's model, version, length and sha256
    (:mod:`gateway.agent.statement`), signed with the same key as the file's ``.sig``."""
    m = manifest
    body = statement.payload(
        m["model_id"], m["version"], m["length"], m["sha256"], rollback_target=rollback_target
    )
    sig = sign(key, statement.pae(statement.PAYLOAD_TYPE, body))
    return {
        "payloadType": statement.PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [{"keyid": keyid(key.public_key()), "sig": base64.b64encode(sig).decode()}],
    }


def index_path(registry: Path, site: str | None) -> Path:
    return registry / "sites" / site / "index.json" if site else registry / "index.json"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _load_signed(path: Path, site: str | None) -> dict[str, Any]:
    if not path.exists():
        return {"_type": "site-index", "site": site or "*", "version": 0, "deployments": [], "commands": {}}
    try:
        return dict(json.loads(path.read_bytes())["signed"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: not a signed index") from exc


def write_index(
    registry: Path,
    site: str | None,
    key: PrivateKey,
    change: Any,
    *,
    now: float | None = None,
    expires_s: float = DEFAULT_EXPIRES_S,
) -> dict[str, Any]:
    """Apply ``change(signed)`` to the index, bump its version, re-sign and write it atomically."""
    path = index_path(registry, site)
    signed = _load_signed(path, site)
    change(signed)
    now = time.time() if now is None else now
    signed["version"] = int(signed.get("version", 0)) + 1
    signed["issued"] = format_time(now)
    signed["expires"] = format_time(now + expires_s)
    atomic.write_bytes(path, envelope(signed, key))
    return signed


def publish(
    registry: Path,
    model_file: Path,
    key_path: Path,
    *,
    model_id: str,
    version: str,
    site: str | None = None,
    cohort: str = "",
    percent: float = 100.0,
    min_firmware: str | None = None,
    max_firmware: str | None = None,
    start: str | None = None,
    end: str | None = None,
    health: Mapping[str, float] | None = None,
    data_version: str | None = None,
    extra: Mapping[str, Any] | None = None,
    expires_s: float = DEFAULT_EXPIRES_S,
    now: float | None = None,
    keep: int = DEFAULT_KEEP,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, Any]:
    """Copy the model in, sign it, write its chunk list (``chunk_size`` 0: none), and add its deployment to the signed index; returns the manifest.

    Superseded deployments (same model, cohort and firmware range) are retired from the index but
    for the newest ``keep`` of them, this one included: an index that lists every version ever
    published makes every artifact look wanted, and a gateway's quota then fills for good. The
    files stay in the registry."""
    _check_publish(registry, key_path, model_id, version, percent=percent, health=health, keep=keep)
    if chunk_size and not MIN_CHUNK_BYTES <= chunk_size <= MAX_CHUNK_BYTES:
        raise ConfigError(
            "command line",
            "--chunk-size",
            f"0 (no chunk list) or {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES} bytes",
        )
    key = load_private_key(key_path)
    rel, data = _copy_in(registry, model_file, model_id, version, key)
    compat = {k: v for k, v in (("min_firmware", min_firmware), ("max_firmware", max_firmware)) if v}
    manifest: dict[str, Any] = {
        "model_id": model_id,
        "version": version,
        "artifact_url": rel,
        "signature_url": rel + ".sig",
        "sha256": hashlib.sha256(data).hexdigest(),
        "length": len(data),
        "target_cohort": cohort,
        "rollout_percentage": percent,
        "compatibility": compat,
        "health_checks": {k: (int(v) if k == "warmup_inferences" else v) for k, v in (health or {}).items()},
    }
    if chunk_size:
        # The device streams verified chunks while the gateway still mirrors the rest; the list's
        # digest rides in the signed index, so the list needs no signature of its own.
        listed = chunks.digests(data, chunk_size)
        atomic.write_bytes(registry / (rel + ".chunks"), listed)
        manifest["chunks"] = {
            "size": chunk_size,
            "sha256": hashlib.sha256(listed).hexdigest(),
            "url": rel + ".chunks",
        }
    manifest["statement"] = statement_envelope(key, manifest, bool((extra or {}).get("rollback_target")))
    if data_version is not None:
        manifest["data_version"] = data_version
    for name, value in (("start_time", start), ("end_time", end)):
        if value:
            manifest[name] = format_time(parse_time(value, f"--{name.split('_')[0]}"))
    manifest.update(extra or {})
    parse_deployment(manifest)  # never publish what a gateway would refuse

    def change(signed: dict[str, Any]) -> None:
        others = [
            d
            for d in signed.get("deployments", [])
            if not (d.get("model_id") == model_id and d.get("version") == version)
        ]
        signed["deployments"] = retire_superseded([*others, manifest], manifest, keep)

    write_index(registry, site, key, change, now=now, expires_s=expires_s)
    return manifest


def _check_publish(
    registry: Path,
    key_path: Path,
    model_id: str,
    version: str,
    *,
    percent: float,
    health: Mapping[str, float] | None,
    keep: int,
) -> None:
    """The command line's arguments to ``publish``, before anything is written."""
    if _inside(key_path, registry):
        raise ConfigError(
            "command line", "--key", f"a private key kept outside the registry folder {registry}"
        )
    if not valid_id(model_id):
        raise ConfigError("command line", "--model-id", "letters, digits, '.', '_' or '-'")
    if not valid_id(version):
        raise ConfigError("command line", "--version", "letters, digits, '.', '_' or '-'")
    if keep < 1:
        raise ConfigError("command line", "--keep", "a number of versions to keep, 1 or more")
    if not 0 <= percent <= 100:
        raise ConfigError("command line", "--percent", "a number from 0 to 100")
    for k in health or {}:
        if k not in HEALTH_KEYS:
            raise ConfigError(
                "command line", "--health", "KEY=VALUE with KEY one of " + ", ".join(HEALTH_KEYS)
            )


def _copy_in(
    registry: Path, model_file: Path, model_id: str, version: str, key: PrivateKey
) -> tuple[str, bytes]:
    """The model copied into the registry (atomically) beside its signature: its path there and
    its bytes."""
    try:
        data = model_file.read_bytes()
    except OSError as exc:
        raise ConfigError("command line", "MODEL_FILE", f"a readable file ({exc.strerror})") from exc
    rel = f"artifacts/{model_id}/{version}/{model_file.name}"
    dest = registry / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(model_file, tmp)
    os.replace(tmp, dest)
    atomic.write_bytes(dest.with_name(dest.name + ".sig"), sign(key, data))
    return rel, data


def _group(d: Mapping[str, Any]) -> tuple[Any, ...]:
    compat = d.get("compatibility") or {}
    return (
        d.get("model_id"),
        d.get("target_cohort") or "",
        compat.get("min_firmware"),
        compat.get("max_firmware"),
    )


def _version_order(d: Mapping[str, Any]) -> tuple[int, Any]:
    v = try_version(str(d.get("version")))
    return (1, v.sort_key()) if v is not None else (0, str(d.get("version")))


def retire_superseded(
    deployments: Sequence[Mapping[str, Any]], new: Mapping[str, Any], keep: int
) -> list[Mapping[str, Any]]:
    """Drop the deployments of ``new``'s model, cohort and firmware range beyond the newest ``keep``
    (by version); every other deployment, and the order of those kept, is left as it was."""
    same = [d for d in deployments if _group(d) == _group(new)]
    newest = sorted(same, key=_version_order, reverse=True)[:keep]
    kept = {id(d) for d in newest}
    return [d for d in deployments if _group(d) != _group(new) or id(d) in kept]


def set_command(
    registry: Path, key_path: Path, target: str, command: str | None, *, site: str | None = None
) -> dict[str, Any]:
    """Sign a coordinator command into the index: ``paused``, ``aborted``, or None to clear."""
    key = load_private_key(key_path)

    def change(signed: dict[str, Any]) -> None:
        commands = dict(signed.get("commands") or {})
        if command is None:
            commands.pop(target, None)
        else:
            commands[target] = command
        signed["commands"] = commands

    return write_index(registry, site, key, change)


def sign_key_list(registry: Path, root_key_path: Path, public_keys: Sequence[Path], *, version: int) -> Path:
    """Write ``keys.json``: the online keys that may sign indexes, signed by a root key."""
    key = load_private_key(root_key_path)
    now = time.time()
    signed = {
        "_type": "key-list",
        "version": version,
        "expires": format_time(now + 365 * 86400),
        "keys": [{"public_key_pem": p.read_text()} for p in public_keys],
    }
    path = registry / "keys.json"
    atomic.write_bytes(path, envelope(signed, key))
    return path

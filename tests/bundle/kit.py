"""Bundles for the tests: made by the real export, then damaged on purpose; a device that checks
every byte it gets against the cloud's key."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.bundle.export import export
from gateway.bundle.layout import MANIFEST_NAME
from tests.conftest import Registry


def make_bundle(reg: Registry, dest: Path) -> Path:
    export(reg.root, reg.site, dest)
    return dest


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:") as tf:
        out = {}
        for info in tf.getmembers():
            f = tf.extractfile(info)
            assert f is not None
            out[info.name] = f.read()
        return out


def rewrite(
    bundle: Path, dest: Path, change: Callable[[dict[str, bytes]], None], *, fix_manifest: bool = True
) -> Path:
    """The bundle with ``change`` applied to its members; ``fix_manifest``: bundle.json made to agree
    (as a tamperer would), so only the signatures can tell."""
    files = members(bundle)
    change(files)
    if fix_manifest:
        doc = json.loads(files[MANIFEST_NAME])
        doc["members"] = [
            {"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
            for n, b in files.items()
            if n != MANIFEST_NAME
        ]
        files[MANIFEST_NAME] = json.dumps(doc).encode()
    with tarfile.open(dest, "w:") as tf:
        for name in [MANIFEST_NAME, *[n for n in files if n != MANIFEST_NAME]]:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tf.addfile(info, io.BytesIO(files[name]))
    return dest


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def member_offset(bundle: Path, name: str) -> tuple[int, int]:
    with tarfile.open(bundle, "r:") as tf:
        info = tf.getmember(name)
        return info.offset_data, info.size


def verify_with_cloud_key(public_pem: Path, data: bytes, sig: bytes, sha256: str) -> None:
    """What a device agent does: sha256, then the detached signature with the cloud's key."""
    assert hashlib.sha256(data).hexdigest() == sha256
    key = serialization.load_pem_public_key(public_pem.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(sig, data, ec.ECDSA(hashes.SHA256()))


async def device_update(base: str, device: str, public_pem: Path) -> tuple[int, dict[str, object] | None]:
    """Poll; when offered, download the artifact and its signature and verify them end to end.
    Returns (poll status, the manifest when verified). An artifact answer other than 200 with
    exact bytes must be a 503 (not there yet): anything else fails."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/devices/{device}/updates") as r:
            if r.status != 200:
                return r.status, None
            manifest = json.loads(await r.read())
        async with s.get(str(manifest["artifact_url"])) as r:
            if r.status == 503:
                return 503, None
            assert r.status == 200, r.status
            data = await r.read()
        async with s.get(str(manifest["signature_url"])) as r:
            assert r.status == 200, r.status
            sig = await r.read()
    verify_with_cloud_key(public_pem, data, sig, str(manifest["sha256"]))
    return 200, manifest

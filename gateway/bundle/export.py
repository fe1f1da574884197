"""The cloud side: a registry folder's signed index, key list and artifacts into one bundle.

What goes in: the site's index (``sites/<site>/index.json``, else the fleet ``index.json``), the
signed ``keys.json`` when there is one, a TUF registry's current metadata (``metadata/``), and every file a deployment names by a relative URL that
lives in the registry: ``artifact_url``, ``signature_url`` and any other ``url`` or ``*_url`` field,
nested ones too (a chunk list's ``chunks.url``). Nothing is signed here: the bundle carries the
cloud's own signatures, and ``bundle.json`` (sizes and sha256 of the members) only lets a gateway
tell a whole copy from a cut one.

The file is written beside its destination, fsynced, then renamed into place: a bundle that exists
under its name is whole. Each member is hashed while it is copied in and compared with the hash
``bundle.json`` lists, so a registry file changed during the export fails it instead of shipping a
bundle that contradicts itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gateway.bundle.layout import MANIFEST_NAME, manifest_doc, safe_name
from gateway.core.errors import ConfigError, FormatError
from gateway.core.manifest import format_time
from gateway.runtime import atomic

COPY_BYTES = 1 << 20


def _urls(value: Any, key: str = "") -> Iterator[str]:
    """Every string under a ``url`` or ``*_url`` key, at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _urls(v, str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _urls(v, key)
    elif isinstance(value, str) and (key == "url" or key.endswith("_url")):
        yield value


def _in_registry(registry: Path, rel: str) -> Path | None:
    if not safe_name(rel):
        return None  # absolute, another host, or climbing out: not ours to carry
    path = (registry / rel).resolve()
    if not path.is_relative_to(registry.resolve()) or not path.is_file():
        return None
    return path


def select(registry: Path, site: str | None) -> tuple[str, list[str]]:
    """The index to carry and every registry file it (and the key list) brings along, in bundle
    order: keys, index, then per deployment its signature and other small files before the
    artifact, so a cut bundle loses artifacts' tails first."""
    candidates = [f"sites/{site}/index.json"] if site else []
    index_rel = next((r for r in [*candidates, "index.json"] if (registry / r).is_file()), None)
    if index_rel is None:
        where = f"sites/{site}/index.json or index.json" if site else "index.json"
        raise ConfigError("command line", "--registry", f"a registry folder with {where}")
    try:
        signed = json.loads((registry / index_rel).read_bytes())["signed"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{registry / index_rel}: not a signed index") from exc
    names = ["keys.json"] if (registry / "keys.json").is_file() else []
    names.append(index_rel)
    names += tuf_metadata(registry)
    for dep in signed.get("deployments") or []:
        urls = list(dict.fromkeys(_urls(dep)))
        artifact = dep.get("artifact_url") if isinstance(dep, dict) else None
        ordered = [u for u in urls if u != artifact] + ([artifact] if artifact in urls else [])
        for rel in ordered:
            if rel not in names and _in_registry(registry, rel) is not None:
                names.append(rel)
    return index_rel, names


def tuf_metadata(registry: Path) -> list[str]:
    """A TUF registry's current metadata (every root version, the timestamp, the snapshot it names
    and every targets role that snapshot names), so a site on ``trust.format = "tuf"`` imports the
    same bundle as one on the index; none when the registry is not also a TUF repository."""
    folder = registry / "metadata"
    if not (folder / "timestamp.json").is_file():
        return []
    try:
        snap_version = json.loads((folder / "timestamp.json").read_bytes())["signed"]["meta"][
            "snapshot.json"
        ]["version"]
        snapshot = f"{snap_version}.snapshot.json"
        meta = json.loads((folder / snapshot).read_bytes())["signed"]["meta"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{folder}: unreadable TUF timestamp or snapshot ({exc})") from exc
    roots = sorted((p.name for p in folder.glob("*.root.json")), key=lambda n: int(n.split(".")[0]))
    roles = [f"{m['version']}.{name}" for name, m in sorted(meta.items())]
    return [f"metadata/{n}" for n in [*roots, "timestamp.json", snapshot, *roles]]


def _hash(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(COPY_BYTES):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


class _Hashing(io.RawIOBase):
    """A file read through a running sha256 (to prove the copy is what bundle.json says)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.h = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.h.update(data)
        return data


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info


def export(registry: Path, site: str | None, dest: Path, *, now: float | None = None) -> dict[str, Any]:
    """Write the bundle to ``dest`` (atomically); returns what ``bundle.json`` says."""
    now = time.time() if now is None else now
    index_rel, names = select(registry, site)
    members: list[dict[str, Any]] = []
    for rel in names:
        size, sha = _hash(registry / rel)
        members.append({"name": rel, "size": size, "sha256": sha})
    manifest = manifest_doc(site, format_time(now), index_rel, members)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with tmp.open("wb") as out:
            with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tf:
                tf.addfile(_info(MANIFEST_NAME, len(manifest), now), io.BytesIO(manifest))
                for m in members:
                    with (registry / m["name"]).open("rb") as f:
                        reader = _Hashing(f)
                        tf.addfile(_info(m["name"], m["size"], now), reader)
                    if reader.h.hexdigest() != m["sha256"]:
                        raise FormatError(f"{registry / m['name']} changed during the export; run it again")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        atomic.fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return json.loads(manifest)

"""The bundle's layout: ``bundle.json`` first, then the registry's files under their registry paths.

``bundle.json``::

    {"format": "ota-gateway-bundle/1", "site": "plant-7" | null, "created": "<RFC 3339>",
     "index": "sites/plant-7/index.json", "members": [{"name": ..., "size": ..., "sha256": ...}]}

It lists every other member. A member whose bytes are short or missing (a truncated copy, a stick
pulled mid-write) is *incomplete*; one whose sha256 differs is *damaged*. Both are only transport
facts: what is good is decided by the signatures (:mod:`gateway.trust`), never by this list.

Reading a bundle never extracts it: the tar's directory is read (as far as the file goes) and each
member is served from its offset, so a bundle on a read-only stick needs no room on the gateway.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gateway.core.errors import FormatError, TransportError

FORMAT = "ota-gateway-bundle/1"
MANIFEST_NAME = "bundle.json"
MAX_MANIFEST_BYTES = 16 << 20


def safe_name(name: str) -> bool:
    """A registry-relative path: no scheme, not absolute, no ``..``, no empty parts."""
    p = PurePosixPath(name)
    return (
        bool(name)
        and "\\" not in name
        and ":" not in name
        and not p.is_absolute()
        and all(part not in ("", ".", "..") for part in name.split("/"))
    )


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    sha256: str
    offset: int | None = None  # where its bytes start in the tar; None: not in the file
    present: int = 0  # how many of its bytes the file holds

    @property
    def complete(self) -> bool:
        return self.offset is not None and self.present == self.size

    @property
    def etag(self) -> str:
        """The same artifact has the same validator in every bundle: a transfer cut in one bundle
        resumes from another (``If-Range``)."""
        return f'"bundle-{self.sha256[:32]}"'


@dataclass(frozen=True)
class Fingerprint:
    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> Fingerprint:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def manifest_doc(site: str | None, created: str, index: str, members: list[dict[str, Any]]) -> bytes:
    doc = {"format": FORMAT, "site": site, "created": created, "index": index, "members": members}
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def parse_manifest(raw: bytes) -> tuple[dict[str, Any], dict[str, Member]]:
    """``bundle.json`` -> (its header fields, members by name); FormatError when mis-shaped."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise FormatError(f"{MANIFEST_NAME}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FormatError(f"{MANIFEST_NAME}: not an {FORMAT} manifest")
    members: dict[str, Member] = {}
    for item in doc.get("members") or []:
        try:
            name, size, sha = item["name"], item["size"], item["sha256"]
        except (KeyError, TypeError) as exc:
            raise FormatError(f"{MANIFEST_NAME}: a member without name, size and sha256") from exc
        if not (isinstance(name, str) and safe_name(name) and name != MANIFEST_NAME):
            raise FormatError(f"{MANIFEST_NAME}: member name {name!r:.80} is not a registry path")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise FormatError(f"{MANIFEST_NAME}: {name}: size {size!r:.40} is not a byte count")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise FormatError(f"{MANIFEST_NAME}: {name}: sha256 {sha!r:.80} is not a hex digest")
        members[name] = Member(name, size, sha)
    header = {k: doc.get(k) for k in ("site", "created", "index")}
    return header, members


def _directory(path: Path, file_size: int) -> tuple[bytes | None, dict[str, tuple[int, int, int]]]:
    """The tar's regular files as far as the file goes: name -> (offset, size, bytes present),
    and the bytes of ``bundle.json`` when it is whole. Blocking."""
    found: dict[str, tuple[int, int, int]] = {}
    manifest: bytes | None = None
    try:
        with tarfile.open(path, "r:") as tf:
            while True:
                try:
                    info = tf.next()
                except (tarfile.ReadError, EOFError):
                    break  # truncated: keep what came before
                if info is None:
                    break
                if not info.isreg():
                    continue
                present = max(0, min(info.size, file_size - info.offset_data))
                found[info.name] = (info.offset_data, info.size, present)
                if info.name == MANIFEST_NAME and present == info.size and info.size <= MAX_MANIFEST_BYTES:
                    f = tf.extractfile(info)
                    manifest = f.read() if f is not None else None
    except tarfile.ReadError as exc:
        raise FormatError(f"{path}: not a tar file ({exc})") from exc
    except OSError as exc:
        raise TransportError(
            f"{path}: cannot read the bundle ({exc.strerror or exc})", url=str(path)
        ) from exc
    return manifest, found


@dataclass(frozen=True)
class Layout:
    """What one bundle file holds, read at one instant (:attr:`fingerprint`)."""

    path: Path
    fingerprint: Fingerprint
    site: str | None
    created: str | None
    index: str | None
    members: dict[str, Member]

    @classmethod
    def from_file(cls, path: Path) -> Layout:
        """Blocking. FormatError when it is not a bundle (no whole ``bundle.json`` first);
        TransportError when the file cannot be read."""
        try:
            st = path.stat()
        except OSError as exc:
            raise TransportError(f"{path}: {exc.strerror or exc}", status=404, url=str(path)) from exc
        manifest, found = _directory(path, st.st_size)
        if manifest is None:
            raise FormatError(f"{path}: no whole {MANIFEST_NAME} at its start: not a bundle, or cut short")
        header, listed = parse_manifest(manifest)
        members: dict[str, Member] = {}
        for name, m in listed.items():
            offset, size, present = found.get(name, (None, 0, 0))
            if offset is not None and size != m.size:  # another file under that name: not this member
                offset, present = None, 0
            members[name] = Member(name, m.size, m.sha256, offset, present)
        index = header["index"] if isinstance(header["index"], str) else None
        site = header["site"] if isinstance(header["site"], str) else None
        created = header["created"] if isinstance(header["created"], str) else None
        return cls(path, Fingerprint.of(st), site, created, index, members)

    @property
    def complete(self) -> bool:
        return all(m.complete for m in self.members.values())

    def missing(self) -> list[Member]:
        return [m for m in self.members.values() if not m.complete]

"""The bundle's layout: ``bundle.json`` first, then the registry's files under their registry paths.

``bundle.json``::

    {"format": "ota-gateway-bundle/1", "site": "plant-7" | null, "created": "<RFC 3339>",
     "index": "sites/plant-7/index.json", "members": [{"name": ..., "size": ..., "sha256": ...}]}

It lists every other member. A member whose bytes are short or missing (a truncated copy, a stick
pulled mid-write) is *incomplete*; one whose sha256 differs, or that the tar holds with another size
or as another type (a symlink, a folder), is *damaged*, and :attr:`Member.problem` says which. All
are only transport facts: what is good is decided by the signatures (:mod:`gateway.trust`), never
by this list. ``bundle.json`` is parsed with the same nesting bound as every document from outside
(:mod:`gateway.core.jsondoc`) and its shape checked; anything else is a :class:`FormatError`.

Only a regular file is a bundle: it is opened without blocking (``O_NONBLOCK``, so a FIFO or a
device node cannot hang the reader) and checked with ``fstat`` on the open descriptor.

Reading a bundle never extracts it: the tar's directory is read (as far as the file goes) and each
member is served from its offset, so a bundle on a read-only stick needs no room on the gateway.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from gateway.core import jsondoc
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
    problem: str = ""  # what the tar holds under its name instead (another size, another type)

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
        doc = jsondoc.loads(raw)
    except FormatError as exc:
        raise FormatError(f"{MANIFEST_NAME}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FormatError(f"{MANIFEST_NAME}: not an {FORMAT} manifest")
    listed = doc.get("members")
    if not isinstance(listed, list):
        raise FormatError(f"{MANIFEST_NAME}: members: expected a list of files, got {type(listed).__name__}")
    for key in ("site", "created", "index"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise FormatError(f"{MANIFEST_NAME}: {key}: expected a string, got {type(doc[key]).__name__}")
    members: dict[str, Member] = {}
    for item in listed:
        if not isinstance(item, dict) or not {"name", "size", "sha256"} <= item.keys():
            raise FormatError(f"{MANIFEST_NAME}: a member without name, size and sha256")
        name, size, sha = item["name"], item["size"], item["sha256"]
        if not (isinstance(name, str) and safe_name(name) and name != MANIFEST_NAME):
            raise FormatError(f"{MANIFEST_NAME}: member name {name!r:.80} is not a registry path")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise FormatError(f"{MANIFEST_NAME}: {name}: size {size!r:.40} is not a byte count")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise FormatError(f"{MANIFEST_NAME}: {name}: sha256 {sha!r:.80} is not a hex digest")
        members[name] = Member(name, size, sha)
    header = {k: doc.get(k) for k in ("site", "created", "index")}
    return header, members


def _kind(info: tarfile.TarInfo) -> str:
    if info.issym() or info.islnk():
        return "symlink"
    return "folder" if info.isdir() else "special file"


def open_regular(path: Path) -> tuple[IO[bytes], os.stat_result]:
    """``path`` opened for reading if it is a regular file; never blocks on a FIFO or a device
    (``O_NONBLOCK``), and the type is checked on the open descriptor (no race with a swap).
    FormatError for any other type; OSError when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path}: not a regular file")
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def _directory(
    path: Path, f: IO[bytes], file_size: int
) -> tuple[bytes | None, dict[str, tuple[int, int, int]], dict[str, str]]:
    """The tar's regular files as far as the file goes: name -> (offset, size, bytes present),
    the kind of every other entry by name, and the bytes of ``bundle.json`` when it is whole. Blocking."""
    found: dict[str, tuple[int, int, int]] = {}
    others: dict[str, str] = {}
    manifest: bytes | None = None
    try:
        with tarfile.open(fileobj=f, mode="r:") as tf:
            while True:
                try:
                    info = tf.next()
                except (tarfile.ReadError, EOFError):
                    break  # truncated: keep what came before
                if info is None:
                    break
                if not info.isreg():
                    others[info.name] = _kind(info)
                    continue
                present = max(0, min(info.size, file_size - info.offset_data))
                found[info.name] = (info.offset_data, info.size, present)
                if info.name == MANIFEST_NAME and present == info.size and info.size <= MAX_MANIFEST_BYTES:
                    data = tf.extractfile(info)
                    manifest = data.read() if data is not None else None
    except tarfile.ReadError as exc:
        raise FormatError(f"{path}: not a tar file ({exc})") from exc
    except OSError as exc:
        raise TransportError(
            f"{path}: cannot read the bundle ({exc.strerror or exc})", url=str(path)
        ) from exc
    return manifest, found, others


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
            f, st = open_regular(path)
        except OSError as exc:
            raise TransportError(f"{path}: {exc.strerror or exc}", status=404, url=str(path)) from exc
        with f:
            manifest, found, others = _directory(path, f, st.st_size)
        if manifest is None:
            raise FormatError(f"{path}: no whole {MANIFEST_NAME} at its start: not a bundle, or cut short")
        header, listed = parse_manifest(manifest)
        members: dict[str, Member] = {}
        for name, m in listed.items():
            offset, size, present = found.get(name, (None, 0, 0))
            problem = (
                f"the bundle holds a {others[name]} under that name, not a file" if name in others else ""
            )
            if offset is not None and size != m.size:  # another file under that name: not this member
                offset, present = None, 0
                problem = f"the bundle holds {size} bytes under that name, {MANIFEST_NAME} lists {m.size}"
            members[name] = Member(name, m.size, m.sha256, offset, present, problem)
        index = header["index"] if isinstance(header["index"], str) else None
        site = header["site"] if isinstance(header["site"], str) else None
        created = header["created"] if isinstance(header["created"], str) else None
        return cls(path, Fingerprint.of(st), site, created, index, members)

    @property
    def complete(self) -> bool:
        return all(m.complete for m in self.members.values())

    def missing(self) -> list[Member]:
        return [m for m in self.members.values() if not m.complete]

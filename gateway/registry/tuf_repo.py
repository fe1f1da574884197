"""The registry folder as a TUF repository: read, stage, sign and write its metadata (python-tuf's
Metadata API, TUF specification 1.0 with consistent snapshots).

Beside the legacy index (:mod:`gateway.registry`), in the same folder::

    REGISTRY/metadata/<N>.root.json          every root version (clients walk the chain), and
    REGISTRY/metadata/root.json              the newest one again (a bootstrap for new clients)
    REGISTRY/metadata/timestamp.json         freshness only (the online timestamp key)
    REGISTRY/metadata/<V>.snapshot.json      the versions of every targets role (online snapshot key)
    REGISTRY/metadata/<V>.targets.json       the delegations: which keys sign which models (offline)
    REGISTRY/metadata/<V>.<role>.json        a delegated role: one model's (or team's) targets
    REGISTRY/staged/<role>.json              a role change still short of its threshold of signatures
    REGISTRY/artifacts/<m>/<v>/<sha256>.<file>   the hash-prefixed target (consistent snapshots)

The current version of a role is the one the chain names: the newest root file, the snapshot the
timestamp names, a targets role the snapshot names. A change signed by fewer keys than its
threshold is staged (signatures are public; no private key is ever written here), and ``registry
sign`` adds the others, one machine at a time. This module does the files; the life of keys
(init, delegate, rotate, revoke, publish) is :mod:`gateway.registry.tuf_life`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from gateway.core.errors import ConfigError, FormatError
from gateway.core.manifest import TUF_ISSUED, format_time
from gateway.runtime import atomic

TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
DAY_S = 86400
EXPIRES_S = {"root": 365 * DAY_S, "targets": 90 * DAY_S, "snapshot": 30 * DAY_S, "timestamp": DAY_S}
DELEGATED_EXPIRES_S = 90 * DAY_S
ISSUED = TUF_ISSUED  # in the timestamp's signed part: when it was signed (the gateway's clock floor)
_ROOT_FILE = re.compile(r"^(\d+)\.root\.json$")


def expiry(now: float, seconds: float) -> datetime:
    return (datetime.fromtimestamp(now, UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


def to_bytes(md: Metadata[Any]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=False))


@dataclass(frozen=True)
class Online:
    """The online keys: snapshot (content versions) and timestamp (freshness)."""

    snapshot: Signer | None
    timestamp: Signer


@dataclass(frozen=True)
class Outcome:
    role: str
    version: int
    missing: int  # signatures still needed (0: written and published)

    def line(self) -> str:
        if self.missing:
            return (
                f"{self.role} version {self.version} staged: {self.missing} more signature(s) needed"
                f" (ota-gateway registry sign REGISTRY {self.role} --key ...)"
            )
        return f"{self.role} version {self.version} published"


class Repo:
    """One registry folder's TUF metadata. Blocking file I/O; the commands' tool, not the gateway's."""

    def __init__(self, registry: Path) -> None:
        self.registry = registry
        self.dir = registry / "metadata"
        self.staged_dir = registry / "staged"

    def exists(self) -> bool:
        return (self.dir / "1.root.json").exists()

    def need(self) -> None:
        if not self.exists():
            raise ConfigError(
                "command line",
                "REGISTRY_DIR",
                f"a TUF registry ({self.dir}/1.root.json missing: registry init)",
            )

    def _load(self, path: Path, kind: type[Signed]) -> Metadata[Any]:
        try:
            md: Metadata[Any] = Metadata.from_file(str(path))
        except Exception as exc:  # python-tuf raises several kinds; all mean a bad or missing file
            raise FormatError(f"{path}: not TUF {kind.type} metadata ({exc})") from exc
        if not isinstance(md.signed, kind):
            raise FormatError(f"{path}: expected {kind.type} metadata, found {md.signed.type}")
        return md

    def root_version(self) -> int:
        found = [int(m.group(1)) for p in self.dir.glob("*.root.json") if (m := _ROOT_FILE.match(p.name))]
        return max(found, default=0)

    def root(self, version: int | None = None) -> Metadata[Root]:
        return self._load(self.dir / f"{version or self.root_version()}.root.json", Root)

    def timestamp(self) -> Metadata[Timestamp]:
        return self._load(self.dir / "timestamp.json", Timestamp)

    def snapshot(self) -> Metadata[Snapshot]:
        version = self.timestamp().signed.snapshot_meta.version
        return self._load(self.dir / f"{version}.snapshot.json", Snapshot)

    def has_role(self, name: str) -> bool:
        return f"{name}.json" in self.snapshot().signed.meta

    def role(self, name: str) -> Metadata[Targets]:
        meta = self.snapshot().signed.meta.get(f"{name}.json")
        if meta is None:
            raise ConfigError("command line", "ROLE", f"a targets role the snapshot names ({name!r} is not)")
        return self._load(self.dir / f"{meta.version}.{name}.json", Targets)

    def targets(self) -> Targets:
        return self.role("targets").signed

    # -- thresholds --------------------------------------------------------------------------------

    def missing(self, md: Metadata[Any], name: str) -> int:
        """Signatures ``md`` still needs before a client accepts it as role ``name``."""
        if name == "root":
            previous = self.root(md.signed.version - 1).signed if md.signed.version > 1 else None
            result = md.signed.get_root_verification_result(previous, md.signed_bytes, md.signatures)
            return max(result.first.missing, result.second.missing)
        delegator: Root | Targets = self.root().signed if name in TOP_ROLES else self.targets()
        return delegator.get_verification_result(name, md.signed_bytes, md.signatures).missing

    # -- writing -------------------------------------------------------------------------------------

    def write(self, md: Metadata[Any], name: str) -> Path:
        """Write a role's version file (atomic); a root is written as ``root.json`` too."""
        data = to_bytes(md)
        if name == "timestamp":
            path = self.dir / "timestamp.json"
        else:
            path = self.dir / f"{md.signed.version}.{name}.json"
        atomic.write_bytes(path, data)
        if name == "root":
            atomic.write_bytes(self.dir / "root.json", data)
        return path

    def staged(self, name: str) -> Metadata[Any] | None:
        path = self.staged_dir / f"{name}.json"
        if not path.exists():
            return None
        kinds: dict[str, type[Signed]] = {"root": Root, "snapshot": Snapshot, "timestamp": Timestamp}
        kind = kinds.get(name, Targets)
        return self._load(path, kind)

    def commit(
        self,
        md: Metadata[Any],
        name: str,
        signers: Sequence[Signer],
        online: Online | None,
        *,
        now: float | None = None,
        keep_signatures: bool = False,
    ) -> Outcome:
        """Sign ``md`` as role ``name`` with ``signers``: write and publish it when its threshold is
        met (a targets role then needs a new snapshot and timestamp: ``online``), else stage it."""
        if not keep_signatures:
            md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        missing = self.missing(md, name)
        staged = self.staged_dir / f"{name}.json"
        if missing:
            atomic.write_bytes(staged, to_bytes(md))
            return Outcome(name, md.signed.version, missing)
        if name not in ("root", "snapshot", "timestamp") and online is None:
            raise ConfigError("command line", "--online-keys", "the snapshot and timestamp keys' folder")
        self.write(md, name)
        if staged.exists():
            staged.unlink()
        if name == "root":
            if online is not None:
                self.publish_online(online, now=now)
        elif name not in ("snapshot", "timestamp"):
            assert online is not None
            self.publish_online(online, now=now, changed={name: md.signed.version})
        return Outcome(name, md.signed.version, 0)

    def publish_online(
        self, online: Online, *, now: float | None = None, changed: dict[str, int] | None = None
    ) -> tuple[int, int]:
        """A new snapshot (the current version of every targets role, with ``changed`` applied) and
        a new timestamp naming it. Returns their versions."""
        now = time.time() if now is None else now
        if online.snapshot is None:
            raise ConfigError("command line", "--online-keys", "a folder with snapshot/private.pem")
        try:
            snap = self.snapshot()
            snap.signed.version += 1
        except FormatError:  # the first snapshot (registry init)
            snap = Metadata(Snapshot(expires=expiry(now, EXPIRES_S["snapshot"]), meta={}))
        for role, version in (changed or {}).items():
            snap.signed.meta[f"{role}.json"] = MetaFile(version=version)
        for name, meta in snap.signed.meta.items():
            data = (self.dir / f"{meta.version}.{name}").read_bytes()
            snap.signed.meta[name] = MetaFile.from_data(meta.version, data, ["sha256"])
        snap.signed.expires = expiry(now, EXPIRES_S["snapshot"])
        snap.signatures.clear()
        snap.sign(online.snapshot)
        self.write(snap, "snapshot")
        return snap.signed.version, self.refresh_timestamp(online.timestamp, now=now)

    def refresh_timestamp(
        self, signer: Signer, *, now: float | None = None, expires_s: float = EXPIRES_S["timestamp"]
    ) -> int:
        """Re-sign freshness only: a timestamp one version up naming the current snapshot (the cron
        job of the online server). It changes no content: the snapshot's hashes pin it."""
        now = time.time() if now is None else now
        version = 1
        try:
            snap_version = self.timestamp().signed.snapshot_meta.version
            version = self.timestamp().signed.version + 1
        except FormatError:
            snap_version = 1
        # The newest snapshot file written is the one to name (publish_online writes it first).
        snap_version = max(
            [snap_version] + [int(p.name.split(".")[0]) for p in self.dir.glob("*.snapshot.json")]
        )
        data = (self.dir / f"{snap_version}.snapshot.json").read_bytes()
        ts = Timestamp(
            version=version,
            expires=expiry(now, expires_s),
            snapshot_meta=MetaFile.from_data(snap_version, data, ["sha256"]),
            unrecognized_fields={ISSUED: format_time(now)},
        )
        md = Metadata(ts)
        md.sign(signer)
        try:
            self.root().signed.verify_delegate("timestamp", md.signed_bytes, md.signatures)
        except UnsignedMetadataError as exc:
            raise ConfigError("command line", "--key", "a timestamp key the root names") from exc
        self.write(md, "timestamp")
        return version


def link_target(registry: Path, rel: str, sha256: str) -> str:
    """The hash-prefixed name of an artifact (consistent snapshots), hard-linked beside it."""
    folder, _, name = rel.rpartition("/")
    prefixed = f"{folder}/{sha256}.{name}"
    dest = registry / prefixed
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(registry / rel, tmp)
        except OSError:
            tmp.write_bytes((registry / rel).read_bytes())
        os.replace(tmp, dest)
    return prefixed

"""Verification of a TUF repository (``trust.format = "tuf"``): python-tuf's ``TrustedMetadataSet``
fed bytes and a reference time, and the deployments it proves, as a :class:`SiteIndex`.

``TrustedMetadataSet`` (python-tuf's ngclient, the TUF 1.0 client workflow, section 5) checks the
root chain (each root signed by a threshold of the previous one's keys and its own), thresholds,
expiry against the reference time (the gateway's trusted clock, :mod:`gateway.trust.clock`),
rollback of timestamp and snapshot against what it held before, the snapshot's versions and
hashes of every targets role (mix-and-match), and each delegated role's keys and threshold. This
module adds what the client's target search would otherwise do: a target counts only in the
delegated role whose path patterns take it first (a model's key cannot list another model), and
its ``custom.manifest`` must name exactly that target's path, length and sha256.

:class:`TufSet` keeps the metadata bytes it accepted under the names a client fetches them by
(``<N>.root.json``, ``timestamp.json``, ``<V>.snapshot.json``, ``<V>.<role>.json``): what the
gateway persists and serves to devices unchanged. Fetching is the mirror's (:mod:`gateway.mirror.tuf_poll`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.signer import SSlibKey
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Targets
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from gateway.core.errors import (
    DigestMismatchError,
    ExpiredError,
    FormatError,
    LengthMismatchError,
    RemoteDataError,
    RollbackError,
    UntrustedError,
)
from gateway.core.manifest import (
    TUF_COMMANDS,
    TUF_ISSUED,
    Command,
    Deployment,
    parse_deployment,
    parse_time,
    valid_id,
)
from gateway.trust.index import SiteIndex
from gateway.trust.keys import PublicKey, keyid, parse_public_key

MAX_ROOT_ROTATIONS = 32
# What python-tuf raises for bad remote data (its RepositoryError tree, deserialisation included;
# a few shapes still surface as ValueError, KeyError or TypeError). A RuntimeError is a bug: not caught.
BAD_DATA = (tuf_errors.RepositoryError, ValueError, KeyError, TypeError)
MAX_BYTES = {"root": 512_000, "timestamp": 16_384, "snapshot": 2_000_000, "targets": 5_000_000}
ISSUED = TUF_ISSUED
COMMANDS_FIELD = TUF_COMMANDS  # in a targets role's signed part: the coordinator's hold/abort
COMMANDS = tuple(Command)


def translate(exc: Exception, what: str) -> RemoteDataError:
    """python-tuf's refusal as the gateway's own error kind, with TUF's words kept."""
    message = f"{what}: {exc or type(exc).__name__}"
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return ExpiredError(f"{message} (freeze)")
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return RollbackError(f"{message} (rollback)")
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return UntrustedError(f"{message} (threshold of trusted keys not met)")
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return DigestMismatchError(f"{message} (mix-and-match or tampering)")
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return LengthMismatchError(f"{message} (endless data)")
    if isinstance(exc, tuf_errors.RepositoryError):
        return UntrustedError(message)
    return FormatError(message)


def public_key(key: Any) -> PublicKey | None:
    """A TUF key as the gateway's own key type (for the ``.sig`` files beside the targets)."""
    if not isinstance(key, SSlibKey):
        return None
    value = str(key.keyval.get("public", ""))
    try:
        if key.keytype == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
        return parse_public_key(value.encode(), "TUF key")
    except (ValueError, FormatError):
        return None


class TufSet:
    """The metadata believed so far in one refresh, and the rules for taking in more. No I/O."""

    def __init__(self, trusted_root: bytes, now: float, site: str) -> None:
        try:
            self.tms = TrustedMetadataSet(trusted_root, EnvelopeType.METADATA)
        except BAD_DATA as exc:
            raise translate(exc, "trusted root") from exc
        self.tms.reference_time = datetime.fromtimestamp(now, UTC)
        self.site = site
        self.files: dict[str, bytes] = {f"{self.tms.root.version}.root.json": trusted_root}
        self.changed = False  # anything taken in beyond what was held
        self._roles: list[str] = []  # the targets roles taken in, in order

    def _feed(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BAD_DATA as exc:
            raise translate(exc, what) from exc

    def next_root(self) -> str:
        return f"{self.tms.root.version + 1}.root.json"

    def root(self, data: bytes) -> None:
        name = self.next_root()
        self._feed(name, self.tms.update_root, data)
        self.files[name] = data

    def timestamp(self, data: bytes, *, held: bool = False) -> bool:
        """Take in a timestamp; False when it is the version already held (nothing new). A held
        one that no longer verifies (its keys rotated away) is only dropped: the remote one decides."""
        if held:
            try:
                self.tms.update_timestamp(data)
            except tuf_errors.ExpiredMetadataError:
                pass  # loaded all the same: the floor for rollback of the next one
            except BAD_DATA:
                return False
            self.files["timestamp.json"] = data
            return True
        try:
            self.tms.update_timestamp(data)
        except tuf_errors.EqualVersionNumberError:
            return False
        except BAD_DATA as exc:
            raise translate(exc, "timestamp.json") from exc
        self.files["timestamp.json"] = data
        self.changed = True
        return True

    def check_expiry(self, when: datetime) -> None:
        """ExpiredError (freeze) when any metadata of this set has expired by ``when``."""
        for signed in self.tms:
            if signed.is_expired(when):
                raise ExpiredError(f"{signed.type}: the held version {signed.version} expired (freeze)")

    def snapshot_name(self) -> tuple[str, int]:
        meta = self.tms.timestamp.snapshot_meta
        return f"{meta.version}.snapshot.json", meta.length or MAX_BYTES["snapshot"]

    def snapshot(self, data: bytes, *, held: bool) -> None:
        name, _ = self.snapshot_name()
        self._feed(name, self.tms.update_snapshot, data, trusted=held)
        self.files[name] = data
        self.changed |= not held

    def roles(self) -> list[tuple[str, str]]:
        """(role, delegator) still to take in: ``targets``, then its delegations the snapshot names
        (one not in the snapshot yet has no targets; a client asking for its paths is told so)."""
        out = [] if "targets" in self.tms else [("targets", "root")]
        if "targets" in self.tms:
            delegations = self.tms.targets.delegations
            for name in (delegations.roles or {}) if delegations else ():
                if f"{name}.json" in self.tms.snapshot.meta and name not in self.tms:
                    out.append((name, "targets"))
        return out

    def role_name(self, role: str) -> tuple[str, int]:
        meta = self.tms.snapshot.meta.get(f"{role}.json")
        if meta is None:
            raise UntrustedError(f"snapshot names no {role}.json")
        return f"{meta.version}.{role}.json", meta.length or MAX_BYTES["targets"]

    def targets(self, role: str, delegator: str, data: bytes, *, held: bool) -> None:
        name, _ = self.role_name(role)
        self._feed(name, self.tms.update_delegated_targets, data, role, delegator)
        self.files[name] = data
        self._roles.append(role)
        self.changed |= not held

    # -- what it proves ------------------------------------------------------------------------------

    def signing_keys(self) -> dict[str, PublicKey]:
        """Every key that may sign a target (the delegations' and the targets role's), by the
        gateway's keyid: the ``.sig`` files beside the targets are checked against them."""
        keys: list[Any] = [self.tms.root.keys[k] for k in self.tms.root.roles["targets"].keyids]
        delegations = self.tms.targets.delegations if "targets" in self.tms else None
        keys += list((delegations.keys or {}).values()) if delegations else []
        out: dict[str, PublicKey] = {}
        for key in keys:
            pub = public_key(key)
            if pub is not None:
                out[keyid(pub)] = pub
        return out

    def _authority(self, path: str) -> str:
        """The role whose word counts for ``path``: targets itself, or the first delegation (in
        order, as a client searches) whose patterns take it."""
        delegations = self.tms.targets.delegations
        for role in (delegations.roles or {}).values() if delegations else ():
            if role.is_delegated_path(path):
                return role.name
        return "targets"

    def _commands(
        self, role: str, signed: Targets, into: dict[str, str], rejected: list[tuple[str, str]]
    ) -> None:
        """A role's coordinator commands (``x-ota-commands``: ``{"model@version": "paused" |
        "aborted"}``), each only for a model whose targets that role is the authority for."""
        found = signed.unrecognized_fields.get(COMMANDS_FIELD) or {}
        if not isinstance(found, dict):
            rejected.append((f"{role}: {COMMANDS_FIELD}", "expected {'model@version': 'paused' | 'aborted'}"))
            return
        for target, command in found.items():
            model, _, version = str(target).partition("@")
            if command not in COMMANDS or not valid_id(model) or not valid_id(version):
                rejected.append(
                    (f"{role}: {COMMANDS_FIELD}.{target}", "expected 'paused' or 'aborted' for model@version")
                )
            elif self._authority(f"artifacts/{model}/{version}/{model}") != role:
                rejected.append((f"{role}: {COMMANDS_FIELD}.{target}", f"{model} is not delegated to {role}"))
            else:
                into[str(target)] = str(command)

    def index(self) -> SiteIndex:
        """The deployments the verified targets carry for this site, as the legacy index would."""
        deployments: list[Deployment] = []
        rejected: list[tuple[str, str]] = []
        commands: dict[str, str] = {}
        for role in self._roles:
            signed = self.tms[role]
            assert isinstance(signed, Targets)
            self._commands(role, signed, commands, rejected)
            for path, target in signed.targets.items():
                what = f"{role}: {path}"
                if self._authority(path) != role:
                    rejected.append((what, f"not delegated to {role} (its paths do not take it)"))
                    continue
                try:
                    dep = _deployment(path, target)
                except (RemoteDataError, ValueError, TypeError, KeyError) as exc:
                    rejected.append((what, str(exc)))
                    continue
                if target.custom.get("site", "*") in ("*", self.site):
                    deployments.append(dep)
        ts = self.tms.timestamp
        issued = ts.unrecognized_fields.get(ISSUED)
        expires = min(s.expires.timestamp() for s in self.tms)
        return SiteIndex(
            version=ts.version,
            issued=parse_time(issued, "timestamp.json " + ISSUED) if isinstance(issued, str) else None,
            expires=expires,
            site=self.site,
            deployments=tuple(deployments),
            rejected=tuple(rejected),
            commands=commands,
            signed_by="tuf",
            raw=pack(self.files),
        )


def _deployment(path: str, target: Any) -> Deployment:
    manifest = json.loads(target.custom["manifest"])
    if not isinstance(manifest, dict):
        raise FormatError("custom.manifest: expected a JSON object")
    sha = target.hashes.get("sha256")
    if (manifest.get("artifact_url"), manifest.get("sha256"), manifest.get("length")) != (
        path,
        sha,
        target.length,
    ):
        raise FormatError("custom.manifest does not name this target's path, sha256 and length")
    return parse_deployment(manifest, path)


def pack(files: Mapping[str, bytes]) -> bytes:
    """The metadata files as one JSON document (one atomic write holds a whole consistent set)."""
    doc = {name: base64.b64encode(data).decode() for name, data in sorted(files.items())}
    return json.dumps({"tuf_metadata": doc}, sort_keys=True).encode()


def unpack(raw: bytes) -> dict[str, bytes]:
    try:
        doc = json.loads(raw)["tuf_metadata"]
        return {str(name): base64.b64decode(data) for name, data in doc.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"held TUF metadata: unreadable ({exc})") from exc

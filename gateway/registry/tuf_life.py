"""The life of a TUF registry's keys and roles: init, delegate, sign, rotate, revoke (TUF
specification 1.0, sections 2 and 4; python-tuf's Metadata API).

Roles and their keys (``registry init`` writes them into a key folder outside the registry)::

    root       k of n offline keys (default 2 of 3): names the keys of the four top roles
    targets    offline: delegates each model (path pattern artifacts/<model>/*/*) to its keys
    <model>    a delegated targets role per model (or team): its own keys and threshold; each
               target's ``custom`` holds the deployment manifest (cohort, percent, firmware,
               windows, health checks, chunks, site), so one signed object says what goes where
    snapshot   online: the version and hash of every targets role (mix-and-match protection)
    timestamp  online: freshness only, re-signed by a cron (``registry timestamp``)

A change short of its threshold is staged and finished by ``registry sign ROLE --key`` on the
machines holding the other keys. The files themselves are :mod:`gateway.registry.tuf_repo`; the
targets (publish, unpublish, commands, migrate) :mod:`gateway.registry.tuf_targets`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Root, Targets

from gateway.core.errors import ConfigError
from gateway.registry import keygen, load_private_key
from gateway.registry.tuf_repo import (
    DELEGATED_EXPIRES_S,
    EXPIRES_S,
    TOP_ROLES,
    Online,
    Outcome,
    Repo,
    expiry,
)
from gateway.trust.keys import parse_public_key

DEFAULT_ROOT_KEYS = 3
DEFAULT_ROOT_THRESHOLD = 2


def signer(path: Path) -> CryptoSigner:
    return CryptoSigner(load_private_key(path))


def public_key(path: Path) -> SSlibKey:
    """A TUF key from a PEM file: a public key, or the public half of a private one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("command line", "--key", f"a readable PEM file at {path}") from exc
    if b"PRIVATE KEY" in data:
        return SSlibKey.from_crypto(load_private_key(path).public_key())
    return SSlibKey.from_crypto(parse_public_key(data, str(path)))


def online(key_dir: Path) -> Online:
    """The online keys from a key folder laid out by ``registry init``."""
    snap = key_dir / "snapshot" / "private.pem"
    return Online(signer(snap) if snap.exists() else None, signer(key_dir / "timestamp" / "private.pem"))


def outside(path: Path, registry: Path, flag: str) -> None:
    try:
        path.resolve().relative_to(registry.resolve())
    except ValueError:
        return
    raise ConfigError("command line", flag, f"a private key kept outside the registry folder {registry}")


def init(
    registry: Path,
    key_dir: Path,
    *,
    root_keys: int = DEFAULT_ROOT_KEYS,
    threshold: int = DEFAULT_ROOT_THRESHOLD,
    algorithm: str = "ecdsa-p256",
    now: float | None = None,
) -> list[Outcome]:
    """Write the keys (root-1..n, targets, snapshot, timestamp) into ``key_dir`` and version 1 of
    every top role into the registry, signed by all of them (the key ceremony)."""
    outside(key_dir, registry, "--keys")
    if not 1 <= threshold <= root_keys:
        raise ConfigError("command line", "--threshold", f"1 to --root-keys ({root_keys})")
    repo = Repo(registry)
    if repo.exists():
        raise ConfigError(
            "command line", "REGISTRY_DIR", f"a registry without TUF metadata ({repo.dir} exists)"
        )
    now = time.time() if now is None else now
    names = [f"root-{i}" for i in range(1, root_keys + 1)] + ["targets", "snapshot", "timestamp"]
    for name in names:
        keygen(key_dir / name, algorithm)
    signers = {n: signer(key_dir / n / "private.pem") for n in names}
    root = Root(expires=expiry(now, EXPIRES_S["root"]), consistent_snapshot=True)
    for name, s in signers.items():
        root.add_key(s.public_key, "root" if name.startswith("root-") else name)
    root.roles["root"].threshold = threshold
    out = [repo.commit(Metadata(root), "root", [signers[n] for n in names if n.startswith("root-")], None)]
    targets = Targets(expires=expiry(now, EXPIRES_S["targets"]), delegations=Delegations(keys={}, roles={}))
    repo.write(_signed(Metadata(targets), [signers["targets"]]), "targets")
    keys = Online(signers["snapshot"], signers["timestamp"])
    snap_v, _ = repo.publish_online(keys, now=now, changed={"targets": 1})
    out.append(Outcome("targets", 1, 0))
    out.append(Outcome("snapshot", snap_v, 0))
    return out


def _signed(md: Metadata[Any], signers: Sequence[Signer]) -> Metadata[Any]:
    for s in signers:
        md.sign(s, append=True)
    return md


def delegate(
    registry: Path,
    name: str,
    keys: Sequence[Key],
    targets_signers: Sequence[Signer],
    keys_online: Online | None,
    *,
    threshold: int = 1,
    paths: Sequence[str] = (),
    now: float | None = None,
) -> Outcome:
    """Delegate a model (or a team, by ``paths``) to ``keys`` with ``threshold``; an existing
    delegation gets the keys added and the threshold set."""
    repo = Repo(registry)
    repo.need()
    if name in TOP_ROLES or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError("command line", "MODEL", "a model or team name (letters, digits, '.', '_', '-')")
    if not keys or not 1 <= threshold <= len(keys) + _held(repo, name):
        raise ConfigError("command line", "--threshold", "1 to the number of the delegation's keys")
    now = time.time() if now is None else now
    md = repo.role("targets")
    delegations = md.signed.delegations
    assert delegations is not None and delegations.roles is not None
    role = delegations.roles.get(name)
    if role is None:
        patterns = list(paths) or [f"artifacts/{name}/*/*"]
        role = DelegatedRole(name, [], threshold, terminating=True, paths=patterns)
        delegations.roles[name] = role
    role.threshold = threshold
    for key in keys:
        md.signed.add_key(key, name)
    _bump(md, now, EXPIRES_S["targets"])
    return repo.commit(md, "targets", targets_signers, keys_online, now=now)


def _held(repo: Repo, name: str) -> int:
    roles = repo.targets().delegations
    role = roles.roles.get(name) if roles and roles.roles else None
    return len(role.keyids) if role else 0


def _bump(md: Metadata[Any], now: float, expires_s: float) -> None:
    md.signed.version += 1
    md.signed.expires = expiry(now, expires_s)


def sign(
    registry: Path,
    name: str,
    signers: Sequence[Signer],
    keys_online: Online | None,
    *,
    now: float | None = None,
) -> Outcome:
    """Add signatures to a staged change; with none staged, re-sign the role's current content one
    version up (after a revocation, with the keys that remain or were added)."""
    repo = Repo(registry)
    repo.need()
    now = time.time() if now is None else now
    md = repo.staged(name)
    if md is not None:
        return repo.commit(md, name, signers, keys_online, now=now, keep_signatures=True)
    if name in ("snapshot", "timestamp"):
        raise ConfigError(
            "command line", "ROLE", "root, targets or a delegated role (online roles: registry timestamp)"
        )
    current = repo.root() if name == "root" else repo.role(name)
    expires_s = EXPIRES_S.get(name, DELEGATED_EXPIRES_S)
    _bump(current, now, expires_s)
    return repo.commit(current, name, signers, keys_online, now=now)


def rotate(
    registry: Path,
    role: str,
    signers: Sequence[Signer],
    keys_online: Online | None,
    *,
    add: Sequence[Key] = (),
    remove: Sequence[str] = (),
    threshold: int | None = None,
    now: float | None = None,
) -> Outcome:
    """A new root version: ``role``'s keys changed (added, removed by keyid) and its threshold set.
    It needs a threshold of the old root's keys and of the new one's (TUF 1.0, 5.3.4)."""
    if role not in TOP_ROLES:
        raise ConfigError("command line", "--role", "one of " + ", ".join(TOP_ROLES))
    repo = Repo(registry)
    repo.need()
    now = time.time() if now is None else now
    md = repo.root()
    for keyid in remove:
        try:
            md.signed.revoke_key(keyid, role)
        except ValueError as exc:
            raise ConfigError(
                "command line", "--remove", f"a keyid of the {role} role ({keyid} is not)"
            ) from exc
    for key in add:
        md.signed.add_key(key, role)
    if threshold is not None:
        md.signed.roles[role].threshold = threshold
    if md.signed.roles[role].threshold > len(md.signed.roles[role].keyids):
        raise ConfigError("command line", "--threshold", f"at most the {role} role's key count")
    _bump(md, now, EXPIRES_S["root"])
    return repo.commit(md, "root", signers, keys_online, now=now)


def revoke(
    registry: Path,
    name: str,
    keyid: str,
    signers: Sequence[Signer],
    keys_online: Online | None,
    *,
    now: float | None = None,
) -> Outcome:
    """Take a key away from a delegation (signed by the targets keys) or from a top role (a root
    rotation, signed by the root keys). What it signed alone stops verifying at every site as soon
    as the new snapshot and timestamp reach it."""
    if name in TOP_ROLES:
        return rotate(registry, name, signers, keys_online, remove=[keyid], now=now)
    repo = Repo(registry)
    repo.need()
    now = time.time() if now is None else now
    md = repo.role("targets")
    try:
        md.signed.revoke_key(keyid, name)
    except ValueError as exc:
        raise ConfigError(
            "command line", "KEYID", f"a keyid of the {name} delegation ({keyid} is not)"
        ) from exc
    _bump(md, now, EXPIRES_S["targets"])
    return repo.commit(md, "targets", signers, keys_online, now=now)


def keyid_of(value: str) -> str:
    """A keyid as given, or the keyid of a PEM file (public or private)."""
    path = Path(value)
    return public_key(path).keyid if path.exists() else value

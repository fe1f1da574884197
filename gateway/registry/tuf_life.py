"""The life of a TUF registry's keys and targets: init, delegate, publish, sign, rotate, revoke,
timestamp, migrate (TUF specification 1.0, sections 2 and 4; python-tuf's Metadata API).

Roles and their keys (``registry init`` writes them into a key folder outside the registry)::

    root       k of n offline keys (default 2 of 3): names the keys of the four top roles
    targets    offline: delegates each model (path pattern artifacts/<model>/*/*) to its keys
    <model>    a delegated targets role per model (or team): its own keys and threshold; each
               target's ``custom`` holds the deployment manifest (cohort, percent, firmware,
               windows, health checks, chunks, site), so one signed object says what goes where
    snapshot   online: the version and hash of every targets role (mix-and-match protection)
    timestamp  online: freshness only, re-signed by a cron (``registry timestamp``)

A change short of its threshold is staged and finished by ``registry sign ROLE --key`` on the
machines holding the other keys. The files themselves are :mod:`gateway.registry.tuf_repo`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Root, TargetFile, Targets

from gateway.core.errors import ConfigError
from gateway.core.manifest import TUF_COMMANDS as COMMANDS_FIELD
from gateway.registry import _load_signed, keygen, load_private_key, retire_superseded
from gateway.registry import publish as legacy_publish
from gateway.registry.tuf_repo import (
    DELEGATED_EXPIRES_S,
    EXPIRES_S,
    TOP_ROLES,
    Online,
    Outcome,
    Repo,
    expiry,
    link_target,
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


def role_for(repo: Repo, path: str) -> str:
    """The delegated role whose path patterns take ``path`` (the first, as clients search)."""
    delegations = repo.targets().delegations
    for role in (delegations.roles or {}).values() if delegations else ():
        if role.is_delegated_path(path):
            return role.name
    raise ConfigError(
        "command line", "--model-id", f"a model delegated first (registry delegate): no role takes {path}"
    )


def add_target(
    registry: Path,
    manifest: Mapping[str, Any],
    signers: Sequence[Signer],
    keys_online: Online | None,
    *,
    site: str | None = None,
    keep: int = 2,
    now: float | None = None,
) -> Outcome:
    """Add a published model to its delegated role: the target (length, sha256) with the
    deployment manifest in ``custom``; superseded ones beyond ``keep`` are retired."""
    repo = Repo(registry)
    repo.need()
    now = time.time() if now is None else now
    path = str(manifest["artifact_url"])
    link_target(registry, path, str(manifest["sha256"]))
    name = role_for(repo, path)
    if repo.has_role(name):
        md = repo.role(name)
        _bump(md, now, DELEGATED_EXPIRES_S)
    else:
        md = Metadata(Targets(expires=expiry(now, DELEGATED_EXPIRES_S)))
    custom = {"manifest": manifest_text(manifest), "site": site or "*"}
    new = TargetFile(int(manifest["length"]), {"sha256": str(manifest["sha256"])}, path, {"custom": custom})
    held = {p: t for p, t in md.signed.targets.items() if p != path}
    same_site = {
        p: json.loads(t.custom["manifest"]) for p, t in held.items() if t.custom.get("site") == custom["site"]
    }
    kept = {id(d) for d in retire_superseded([*same_site.values(), manifest], manifest, keep)}
    md.signed.targets = {p: t for p, t in held.items() if p not in same_site or id(same_site[p]) in kept}
    md.signed.targets[path] = new
    return repo.commit(md, name, signers, keys_online, now=now)


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """The manifest as canonical JSON text: TUF's canonical JSON has no floats (percentages and
    health limits are), so the manifest rides as a string the target's signature covers."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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


def publish(
    registry: Path,
    model_file: Path,
    key_path: Path,
    keys_online: Online | None,
    *,
    cosigners: Sequence[Path] = (),
    **kwargs: Any,
) -> tuple[dict[str, Any], Outcome]:
    """``registry publish`` on a TUF registry: the legacy index, ``.sig`` and chunk list as always,
    and the target in its model's delegated role, signed by ``key_path`` (and ``cosigners``)."""
    manifest = legacy_publish(registry, model_file, key_path, **kwargs)
    signers = [signer(p) for p in (key_path, *cosigners)]
    outcome = add_target(
        registry,
        manifest,
        signers,
        keys_online,
        site=kwargs.get("site"),
        keep=kwargs.get("keep", 2),
        now=kwargs.get("now"),
    )
    return manifest, outcome


def migrate(
    registry: Path, key_dir: Path, legacy_key: Path, *, now: float | None = None, **init_args: Any
) -> list[Outcome]:
    """A TUF repository beside an existing registry's index(es): every model delegated to the
    legacy signing key (threshold 1, so ``.sig`` files and the index stay signed by the same key),
    and every deployment listed today added as a target. Keys are made as by :func:`init` unless
    ``key_dir`` already holds them."""
    repo = Repo(registry)
    out: list[Outcome] = []
    if not repo.exists():
        out += init(registry, key_dir, now=now, **init_args)
    keys_online = online(key_dir)
    targets_signer = [signer(key_dir / "targets" / "private.pem")]
    legacy = signer(legacy_key)
    indexes = [(None, registry / "index.json")] + [
        (p.parent.name, p) for p in sorted((registry / "sites").glob("*/index.json"))
    ]
    for site, path in indexes:
        if not path.exists():
            continue
        for manifest in _load_signed(path, site).get("deployments", []):
            model = str(manifest["model_id"])
            if _held(repo, model) == 0:
                out.append(
                    delegate(registry, model, [legacy.public_key], targets_signer, keys_online, now=now)
                )
            out.append(
                add_target(registry, manifest, [legacy], keys_online, site=site, keep=1 << 30, now=now)
            )
    return out


def set_command(
    registry: Path,
    target: str,
    command: str | None,
    signers: Sequence[Signer],
    keys_online: Online | None,
    *,
    now: float | None = None,
) -> Outcome:
    """The coordinator's hold or abort (``paused``, ``aborted``; None clears) for ``model@version``,
    signed into that model's delegated role (``x-ota-commands``): its own keys say it."""
    repo = Repo(registry)
    repo.need()
    model, _, version = target.partition("@")
    name = role_for(repo, f"artifacts/{model}/{version}/{model}")
    md = repo.role(name)
    commands = dict(md.signed.unrecognized_fields.get(COMMANDS_FIELD) or {})
    if command is None:
        commands.pop(target, None)
    else:
        commands[target] = command
    md.signed.unrecognized_fields[COMMANDS_FIELD] = commands
    _bump(md, time.time() if now is None else now, DELEGATED_EXPIRES_S)
    return repo.commit(md, name, signers, keys_online, now=now)

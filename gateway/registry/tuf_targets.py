"""The targets of a TUF registry: a published model's target in its delegated role (with the
deployment manifest in ``custom``), unpublishing, coordinator commands, and ``registry migrate``
from an existing index. The keys and roles themselves are :mod:`gateway.registry.tuf_life`."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, TargetFile, Targets

from gateway.core.errors import ConfigError
from gateway.core.manifest import TUF_COMMANDS as COMMANDS_FIELD
from gateway.registry import _load_signed, retire_superseded
from gateway.registry import publish as legacy_publish
from gateway.registry.tuf_life import _bump, _held, delegate, init, online, signer
from gateway.registry.tuf_repo import DELEGATED_EXPIRES_S, Online, Outcome, Repo, expiry, link_target


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
    and the target in its model's delegated role, signed by ``key_path`` (and ``cosigners``).
    What the TUF side needs (online keys, a delegation taking the path) is checked before anything
    is written. The legacy index, signed by ``key_path`` alone, lists it at once."""
    if keys_online is None:
        raise ConfigError(
            "command line", "--online-keys", "the snapshot and timestamp keys' folder (a TUF registry)"
        )
    role_for(Repo(registry), f"artifacts/{kwargs.get('model_id')}/{kwargs.get('version')}/{model_file.name}")
    signers = [signer(p) for p in (key_path, *cosigners)]
    manifest = legacy_publish(registry, model_file, key_path, **kwargs)
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


def unpublish(
    registry: Path,
    model: str,
    version: str,
    signers: Sequence[Signer],
    keys_online: Online | None,
    *,
    now: float | None = None,
) -> Outcome:
    """Take ``model``'s ``version`` out of its delegated role (what a stolen key listed, say): sites
    drop the deployment at their next refresh. The files stay in the registry."""
    repo = Repo(registry)
    repo.need()
    name = role_for(repo, f"artifacts/{model}/{version}/{model}")
    md = repo.role(name)
    gone = [p for p in md.signed.targets if p.startswith(f"artifacts/{model}/{version}/")]
    if not gone:
        raise ConfigError("command line", "VERSION", f"a version {name} lists ({model} {version} is not)")
    for path in gone:
        del md.signed.targets[path]
    _bump(md, time.time() if now is None else now, DELEGATED_EXPIRES_S)
    return repo.commit(md, name, signers, keys_online, now=now)

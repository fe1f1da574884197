"""``ota-gateway registry init|delegate|sign|timestamp|root rotate|revoke|unpublish|migrate``: the registry
as a TUF repository (:mod:`gateway.registry.tuf_life`). Private keys are named on the command
line and never written inside the registry folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from gateway.registry import tuf_life, tuf_targets
from gateway.registry.tuf_repo import EXPIRES_S, Online, Repo


def _online(args: argparse.Namespace) -> Online | None:
    if not args.online_keys:
        return None
    tuf_life.outside(Path(args.online_keys), Path(args.registry_dir), "--online-keys")
    return tuf_life.online(Path(args.online_keys))


def _signers(paths: list[str], args: argparse.Namespace, flag: str = "--key") -> list[Any]:
    """Private keys, each refused when it sits inside the registry folder (it would be published)."""
    for p in paths or []:
        tuf_life.outside(Path(p), Path(args.registry_dir), flag)
    return [tuf_life.signer(Path(p)) for p in paths or []]


def cmd_init(args: argparse.Namespace) -> int:
    outcomes = tuf_life.init(
        Path(args.registry_dir),
        Path(args.keys),
        root_keys=args.root_keys,
        threshold=args.threshold,
        algorithm=args.algorithm,
    )
    for o in outcomes:
        print(o.line())
    print(
        f"keys written under {args.keys}: root-1..{args.root_keys} (any {args.threshold} sign a root;"
        " move each to its own offline holder), targets (offline), snapshot and timestamp (online)."
    )
    print(
        f"give gateways and devices {Path(args.registry_dir) / 'metadata' / '1.root.json'} (trust.tuf_root)"
    )
    return 0


def cmd_delegate(args: argparse.Namespace) -> int:
    keys = [tuf_life.public_key(Path(p)) for p in args.key]
    o = tuf_life.delegate(
        Path(args.registry_dir),
        args.model,
        keys,
        _signers(args.targets_key, args, "--targets-key"),
        _online(args),
        threshold=args.threshold,
        paths=args.path or (),
    )
    print(o.line())
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    print(tuf_life.sign(Path(args.registry_dir), args.role, _signers(args.key, args), _online(args)).line())
    return 0


def cmd_timestamp(args: argparse.Namespace) -> int:
    repo = Repo(Path(args.registry_dir))
    repo.need()
    (signer,) = _signers([args.key], args)
    version = repo.refresh_timestamp(signer, expires_s=args.expires_hours * 3600)
    print(f"timestamp version {version} published (expires in {args.expires_hours:g} h)")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    o = tuf_life.rotate(
        Path(args.registry_dir),
        args.role,
        _signers(args.key, args),
        _online(args),
        add=[tuf_life.public_key(Path(p)) for p in args.add or []],
        remove=[tuf_life.keyid_of(v) for v in args.remove or []],
        threshold=args.threshold,
    )
    print(o.line())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    keyid = tuf_life.keyid_of(args.revoked)
    o = tuf_life.revoke(Path(args.registry_dir), args.role, keyid, _signers(args.key, args), _online(args))
    print(f"revoked {keyid[:16]}… from {args.role}: {o.line()}")
    return 0


def cmd_unpublish(args: argparse.Namespace) -> int:
    o = tuf_targets.unpublish(
        Path(args.registry_dir), args.model, args.version, _signers(args.key, args), _online(args)
    )
    print(o.line())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _signers([args.key], args)
    for o in tuf_targets.migrate(Path(args.registry_dir), Path(args.keys), Path(args.key)):
        print(o.line())
    return 0


def _online_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--online-keys",
        metavar="KEY_DIR",
        help="the folder holding snapshot/private.pem and timestamp/private.pem (as registry init made it)",
    )


def _register_rotate(rs: Any) -> None:
    r = rs.add_parser("root", help="TUF: root rotation")
    rr = r.add_subparsers(dest="root_command", required=True, metavar="rotate")
    rot = rr.add_parser("rotate", help="a new root: a top role's keys and threshold changed")
    rot.add_argument("registry_dir", metavar="REGISTRY_DIR")
    rot.add_argument("--role", choices=("root", "targets", "snapshot", "timestamp"), required=True)
    rot.add_argument("--add", action="append", help="a public key to add to ROLE (repeat)")
    rot.add_argument("--remove", action="append", help="a keyid or PEM file to remove from ROLE (repeat)")
    rot.add_argument("--threshold", type=int)
    rot.add_argument("--key", action="append", required=True, help="a root private key, old or new (repeat)")
    _online_arg(rot)
    rot.set_defaults(func=cmd_rotate)


def register_tuf(rs: Any) -> None:
    logging.getLogger("tuf").setLevel(logging.WARNING)  # its INFO lines list every key not (yet) signing
    i = rs.add_parser("init", help="TUF: make the keys and version 1 of root, targets, snapshot, timestamp")
    i.add_argument("registry_dir", metavar="REGISTRY_DIR")
    i.add_argument(
        "--keys", required=True, metavar="KEY_DIR", help="where the new keys go (outside REGISTRY_DIR)"
    )
    i.add_argument("--root-keys", type=int, default=tuf_life.DEFAULT_ROOT_KEYS, help="root keys (default 3)")
    i.add_argument(
        "--threshold",
        type=int,
        default=tuf_life.DEFAULT_ROOT_THRESHOLD,
        help="root signatures needed (default 2)",
    )
    i.add_argument("--algorithm", choices=("ecdsa-p256", "ed25519"), default="ecdsa-p256")
    i.set_defaults(func=cmd_init)

    d = rs.add_parser(
        "delegate", help="TUF: delegate a model (or team, --path) to its own keys and threshold"
    )
    d.add_argument("registry_dir", metavar="REGISTRY_DIR")
    d.add_argument("model", metavar="MODEL")
    d.add_argument("--key", action="append", required=True, help="a public key of the delegation (repeat)")
    d.add_argument("--threshold", type=int, default=1)
    d.add_argument("--path", action="append", help="path pattern (default artifacts/MODEL/*/*; repeat)")
    d.add_argument("--targets-key", action="append", required=True, help="a targets private key (repeat)")
    _online_arg(d)
    d.set_defaults(func=cmd_delegate)

    s = rs.add_parser(
        "sign", help="TUF: add signatures to a staged change (or re-sign a role one version up)"
    )
    s.add_argument("registry_dir", metavar="REGISTRY_DIR")
    s.add_argument("role", metavar="ROLE")
    s.add_argument("--key", action="append", required=True, help="a private key of ROLE (repeat)")
    _online_arg(s)
    s.set_defaults(func=cmd_sign)

    t = rs.add_parser("timestamp", help="TUF: re-sign freshness only (a cron on the online server)")
    t.add_argument("registry_dir", metavar="REGISTRY_DIR")
    t.add_argument("--key", required=True, help="the timestamp private key")
    t.add_argument("--expires-hours", type=float, default=EXPIRES_S["timestamp"] / 3600)
    t.set_defaults(func=cmd_timestamp)

    _register_rotate(rs)

    v = rs.add_parser("revoke", help="TUF: take a key away from a delegation or a top role")
    v.add_argument("registry_dir", metavar="REGISTRY_DIR")
    v.add_argument("role", metavar="ROLE", help="a model/team delegation, or root|targets|snapshot|timestamp")
    v.add_argument("revoked", metavar="KEY", help="the keyid, or its PEM file")
    v.add_argument(
        "--key", action="append", required=True, help="targets keys (delegation) or root keys (repeat)"
    )
    _online_arg(v)
    v.set_defaults(func=cmd_revoke)

    u = rs.add_parser("unpublish", help="TUF: take a model version out of its delegated role")
    u.add_argument("registry_dir", metavar="REGISTRY_DIR")
    u.add_argument("model", metavar="MODEL")
    u.add_argument("version", metavar="VERSION")
    u.add_argument("--key", action="append", required=True, help="a private key of the model's role (repeat)")
    _online_arg(u)
    u.set_defaults(func=cmd_unpublish)

    m = rs.add_parser("migrate", help="TUF: write a TUF repository from an existing registry's index")
    m.add_argument("registry_dir", metavar="REGISTRY_DIR")
    m.add_argument(
        "--keys", required=True, metavar="KEY_DIR", help="new TUF keys go here (outside REGISTRY_DIR)"
    )
    m.add_argument(
        "--key", required=True, help="the registry's existing signing key (models delegated to it)"
    )
    m.set_defaults(func=cmd_migrate)

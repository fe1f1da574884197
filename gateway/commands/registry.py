"""``ota-gateway registry``: the cloud side for tests, air-gapped sites and small fleets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway import registry
from gateway.commands.bundle import register_export
from gateway.commands.registry_tuf import register_tuf
from gateway.core.drift_sketch import parse_drift
from gateway.core.errors import ConfigError, FormatError
from gateway.core.manifest import HEALTH_KEYS, Command
from gateway.registry import tuf_life, tuf_targets
from gateway.registry.tuf_repo import Repo


def _health(pairs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            if not sep or key not in HEALTH_KEYS:
                raise ValueError(pair)
            out[key] = float(value)
        except ValueError as exc:
            raise ConfigError(
                "command line", "--health", "KEY=VALUE with KEY one of " + ", ".join(HEALTH_KEYS)
            ) from exc
    return out


def _drift_reference(path: str | None) -> dict[str, Any] | None:
    """``--drift-reference FILE``: a JSON ``{feature: sketch}`` (README, "Drift signals"), checked."""
    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_bytes())
        parse_drift(doc, "the file", max_features=64)
    except (OSError, ValueError, FormatError) as exc:
        raise ConfigError(
            path, "--drift-reference", f"a JSON object of feature -> drift sketch ({exc})"
        ) from exc
    return {"drift_reference": doc}


def cmd_keygen(args: argparse.Namespace) -> int:
    private, public = registry.keygen(Path(args.key_dir), args.algorithm)
    print(f"private key: {private} (mode 0600; keep it off the gateway and out of the registry)")
    print(f"public key:  {public} (give it to gateways: trust.trusted_keys or <data>/trusted-keys/)")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    tuf = Repo(Path(args.registry_dir)).exists()
    kwargs: dict[str, Any] = dict(
        model_id=args.model_id,
        version=args.version,
        site=args.site,
        cohort=args.cohort,
        percent=args.percent,
        min_firmware=args.min_firmware,
        max_firmware=args.max_firmware,
        start=args.start,
        end=args.end,
        health=_health(args.health),
        data_version=args.data_version,
        expires_s=args.expires_days * 86400,
        keep=args.keep,
        chunk_size=args.chunk_size,
        extra={
            **({"rollback_target": True} if args.rollback_target else {}),
            **(_drift_reference(args.drift_reference) or {}),
        }
        or None,
    )
    where = registry.index_path(Path(args.registry_dir), args.site)
    if tuf:  # also the target in the model's delegated role (TUF), signed by --key and --cosign
        for flag, path in [
            ("--online-keys", args.online_keys),
            *[("--cosign", p) for p in args.cosign or []],
        ]:
            if path:
                tuf_life.outside(Path(path), Path(args.registry_dir), flag)
        online = tuf_life.online(Path(args.online_keys)) if args.online_keys else None
        manifest, outcome = tuf_targets.publish(
            Path(args.registry_dir),
            Path(args.model_file),
            Path(args.key),
            online,
            cosigners=[Path(p) for p in args.cosign or []],
            **kwargs,
        )
    else:
        manifest = registry.publish(Path(args.registry_dir), Path(args.model_file), Path(args.key), **kwargs)
    print(json.dumps(manifest, indent=2, sort_keys=True))
    print(f"published {args.model_id} {args.version} into {where}")
    if tuf:
        print(f"TUF: {outcome.line()}")
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    command = None if args.command_name == "clear" else args.command_name
    signed = registry.set_command(
        Path(args.registry_dir), Path(args.key), args.target, command, site=args.site
    )
    print(f"index version {signed['version']}: commands = {json.dumps(signed.get('commands', {}))}")
    if Repo(Path(args.registry_dir)).exists():  # TUF: into the model's delegated role, by its key
        online = tuf_life.online(Path(args.online_keys)) if args.online_keys else None
        signers = [tuf_life.signer(Path(args.key))]
        print(
            "TUF: "
            + tuf_targets.set_command(Path(args.registry_dir), args.target, command, signers, online).line()
        )
    return 0


def cmd_keylist(args: argparse.Namespace) -> int:
    path = registry.sign_key_list(
        Path(args.registry_dir), Path(args.root_key), [Path(p) for p in args.public_key], version=args.version
    )
    print(f"wrote {path}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("registry", help="make keys and publish signed models (the cloud side)")
    rs = p.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    k = rs.add_parser("keygen", help="write a signing key pair")
    k.add_argument("key_dir", metavar="KEY_DIR")
    k.add_argument("--algorithm", choices=registry.ALGORITHMS, default="ecdsa-p256")
    k.set_defaults(func=cmd_keygen)

    pub = rs.add_parser("publish", help="sign a model and add its deployment to the signed index")
    pub.add_argument("registry_dir", metavar="REGISTRY_DIR")
    pub.add_argument("model_file", metavar="MODEL_FILE")
    pub.add_argument("--key", required=True, help="private key (outside REGISTRY_DIR)")
    pub.add_argument("--model-id", required=True)
    pub.add_argument("--version", required=True)
    pub.add_argument("--site", default=None, help="a site's own index (default: the fleet index)")
    pub.add_argument("--cohort", default="", help='target_cohort, e.g. "region:eu-west AND hw:rev2"')
    pub.add_argument("--percent", type=float, default=100.0, help="rollout_percentage")
    pub.add_argument("--min-firmware")
    pub.add_argument("--max-firmware")
    pub.add_argument("--start", help="start_time, RFC 3339")
    pub.add_argument("--end", help="end_time, RFC 3339")
    pub.add_argument("--health", nargs="*", default=[], metavar="KEY=VALUE", help="health_checks")
    pub.add_argument("--data-version")
    pub.add_argument("--expires-days", type=float, default=30.0, help="index expiry (default 30 days)")
    pub.add_argument(
        "--keep",
        type=int,
        default=registry.DEFAULT_KEEP,
        help="superseded deployments of the same model and cohort to keep listing, this one included"
        f" (default {registry.DEFAULT_KEEP}); older ones are retired from the index",
    )
    pub.add_argument(
        "--chunk-size",
        type=int,
        default=registry.DEFAULT_CHUNK_BYTES,
        help="bytes per chunk of the signed chunk list written beside the model, so gateways can"
        f" serve verified chunks while the rest still arrives (default {registry.DEFAULT_CHUNK_BYTES};"
        " 0: no chunk list, devices wait for the whole verified file)",
    )
    pub.add_argument(
        "--online-keys",
        metavar="KEY_DIR",
        help="TUF registries: the folder with snapshot/ and timestamp/ private keys (registry init's)",
    )
    pub.add_argument(
        "--rollback-target",
        action="store_true",
        help="sign the statement as a rollback target: devices running a higher version may take it",
    )
    pub.add_argument(
        "--drift-reference",
        metavar="FILE",
        help="a JSON {feature: sketch} of the model's inputs, put in the manifest as drift_reference",
    )
    pub.add_argument("--cosign", action="append", help="TUF: another key of the model's delegation (repeat)")
    pub.set_defaults(func=cmd_publish)

    c = rs.add_parser("command", help="sign a coordinator command (pause, abort) into the index")
    c.add_argument("registry_dir", metavar="REGISTRY_DIR")
    c.add_argument("target", metavar="MODEL@VERSION")
    c.add_argument("command_name", choices=[*Command, "clear"], metavar="paused|aborted|clear")
    c.add_argument("--key", required=True)
    c.add_argument("--site", default=None)
    c.add_argument(
        "--online-keys", metavar="KEY_DIR", help="TUF registries: the snapshot and timestamp keys' folder"
    )
    c.set_defaults(func=cmd_command)

    kl = rs.add_parser("keylist", help="sign the list of online keys allowed to sign indexes")
    kl.add_argument("registry_dir", metavar="REGISTRY_DIR")
    kl.add_argument("--root-key", required=True, help="a root private key the gateways trust")
    kl.add_argument("--public-key", nargs="+", required=True, help="online public keys")
    kl.add_argument("--version", type=int, required=True)
    kl.set_defaults(func=cmd_keylist)

    register_export(rs)
    register_tuf(rs)

"""``ota-gateway import BUNDLE.tar`` and ``ota-gateway registry export``: air-gapped sites.

``import`` on a running gateway hands the bundle over through ``<data>/import/`` (copied there
beside its final name, fsynced, renamed in), which the gateway watches, and waits for its result:
the running process stays the one writer of its data folder, and the import runs through its mirror
(the same verification, and its site loop judges the new index at once). On a stopped gateway it
runs the same import offline, under the data folder's lock; the next start judges what it took in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from gateway.bundle import export as bundle_export
from gateway.bundle.importer import DEFAULT_TIMEOUT_S, Importer, ImportReport, report_from_json
from gateway.bundle.source import Nowhere, Shelf
from gateway.bundle.watch import result_path, spool_dir
from gateway.commands.serve import add_common, load_settings
from gateway.core import human
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.inventory.store import Inventory
from gateway.mirror.mirror import Mirror
from gateway.runtime import atomic
from gateway.runtime.stats import Stats
from gateway.store.artifacts import ArtifactStore
from gateway.store.lock import data_dir_in_use, lock_data_dir
from gateway.trust.keys import load_trusted_keys
from gateway.trust.state import TrustState


async def import_offline(settings: Settings, bundle: Path, timeout_s: float) -> ImportReport:
    """The running gateway's import path, on a stopped gateway's data folder (under its lock)."""
    data = settings.data_path
    lock = lock_data_dir(data)
    try:
        keys = load_trusted_keys([Path(p) for p in settings.trust.trusted_keys], "configuration")
        (data / "trusted-keys").mkdir(exist_ok=True)
        trust = TrustState(
            data / "trust",
            keys,
            settings.site,
            settings.trust.min_valid_time,
            key_dir=data / "trusted-keys",
            max_future_skew_s=settings.trust.max_future_skew_s,
        )
        inventory = Inventory(data / "inventory.json")
        await asyncio.to_thread(inventory.load)
        store = ArtifactStore(
            data,
            quota_bytes=settings.store.quota_bytes,
            running=lambda: [(r.model_id, r.model_version or "") for r in inventory.live()],
        )
        await store.open()
        shelf = Shelf(Nowhere())  # offline: the bundle is the only upstream
        mirror = Mirror(settings, shelf, trust, store, Stats())
        try:
            await mirror.open()
            return await Importer(mirror, shelf).run(bundle, timeout_s=timeout_s)
        finally:
            await mirror.close()
            await store.catalog.flush(force=True)
            await store.close()
    finally:
        lock.close()


def hand_over(settings: Settings, bundle: Path, timeout_s: float) -> ImportReport | None:
    """Copy the bundle into the running gateway's spool and wait for its report (None: not yet)."""
    spool = spool_dir(settings.data_path)
    spool.mkdir(parents=True, exist_ok=True)
    name = f"{bundle.stem}-{int(time.time())}-{os.getpid()}.tar"
    tmp = spool / f".{name}.part"
    try:
        with bundle.open("rb") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, spool / name)
        atomic.fsync_dir(spool)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError("command line", "BUNDLE", f"a readable bundle and room in {spool} ({exc})") from exc
    out = result_path(settings.data_path, spool / name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = atomic.read_json(out, None)
        if doc is not None:
            out.unlink(missing_ok=True)
            return report_from_json(doc)
        time.sleep(0.2)  # polling the gateway's result file with a deadline
    print(f"handed over to the running gateway; its result will be in {out}")
    return None


def cmd_import(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    bundle = Path(args.bundle)
    if not bundle.is_file():
        raise ConfigError("command line", "BUNDLE", f"a bundle file ({bundle} is not one)")
    if data_dir_in_use(settings.data_path):
        report = hand_over(settings, bundle, args.wait_s)
        if report is None:
            return 1
    else:
        report = asyncio.run(import_offline(settings, bundle, args.wait_s))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    doc = bundle_export.export(Path(args.registry), args.site, Path(args.bundle))
    size = sum(m["size"] for m in doc["members"])
    print(f"wrote {args.bundle}: {doc['index']} and {len(doc['members'])} files, {human.size(size)}")
    return 0


def register_export(rs: Any) -> None:
    """``registry export``, under the ``registry`` command (:mod:`gateway.commands.registry`)."""
    e = rs.add_parser("export", help="write a site's signed index, keys and artifacts into a bundle")
    e.add_argument("bundle", metavar="BUNDLE.tar")
    e.add_argument("--site", default=None, help="the site (default: the fleet index)")
    e.add_argument("--registry", default="registry", help="the registry folder (default: ./registry)")
    e.set_defaults(func=cmd_export)


def register(sub: Any) -> None:
    p = sub.add_parser("import", help="apply a bundle (air-gapped sites), verified as the mirror does")
    p.add_argument("bundle", metavar="BUNDLE.tar")
    add_common(p)
    p.add_argument(
        "--trusted-key", action="append", metavar="PUBLIC_PEM", help="trusted cloud key (a stopped gateway)"
    )
    p.add_argument(
        "--wait-s", type=float, default=DEFAULT_TIMEOUT_S, help="how long to wait for the import to finish"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_import)

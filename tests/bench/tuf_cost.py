"""Benchmark: what TUF costs a site beside today's signed index, at 1,000 targets.

Run: ``python tests/bench/tuf_cost.py [--targets 1000] [--models 50] [--rounds 5]``

One registry folder holds both formats with the same deployments (the index as ``registry
publish`` writes it; TUF as ``registry`` writes it: one delegated role per model). The gateway's own
code reads them through a folder upstream that counts the bytes it hands over:

1. bytes of a first sync (a new site), of a poll where nothing changed, and of a poll after one
   model gained a version: the index (a conditional GET: nothing when unchanged, the whole index
   when anything changed) beside TUF (timestamp and the next-root probe when unchanged; then the
   snapshot and the one changed role);
2. CPU-seconds of a full verification (a site starting cold, or re-verifying what it holds at a
   restart): ``TrustedIndex.verify_index`` (with every deployment's signed statement checked
   once; a later index re-checks only the statements it has not seen) beside the TUF refresh (``mirror.tuf_poll.refresh``:
   root chain, timestamp, snapshot, targets, every role; and the deployments built from them).

Figures only; nothing is asserted. Both formats are measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tuf.api.metadata import Metadata, TargetFile, Targets  # noqa: E402

from gateway import registry  # noqa: E402
from gateway.core.errors import NotModified  # noqa: E402
from gateway.mirror.open_upstream import make_upstream  # noqa: E402
from gateway.mirror.tuf_poll import refresh  # noqa: E402
from gateway.mirror.upstream import Fetched  # noqa: E402
from gateway.registry import tuf_life, tuf_targets  # noqa: E402
from gateway.registry.tuf_repo import DELEGATED_EXPIRES_S, Repo, expiry  # noqa: E402
from gateway.trust.index import TrustedIndex  # noqa: E402
from gateway.trust.keys import keyid, parse_public_key  # noqa: E402
from gateway.trust.tuf import TufSet  # noqa: E402


class Counting:
    """The folder upstream, counting the bytes of every body it returns (a 404 or 304 counts 0)."""

    def __init__(self, folder: Path) -> None:
        self.inner = make_upstream(str(folder))
        self.bytes = 0
        self.requests = 0

    async def get(self, rel: str, **kw: object) -> Fetched:
        self.requests += 1
        got = await self.inner.get(rel, **kw)  # type: ignore[arg-type]
        self.bytes += len(got.body)
        return got


def manifest(model: str, version: str) -> dict[str, object]:
    data = f"{model}-{version}".encode()
    rel = f"artifacts/{model}/{version}/{model}.onnx"
    return {"model_id": model, "version": version, "artifact_url": rel, "signature_url": rel + ".sig",
            "sha256": hashlib.sha256(data).hexdigest(), "length": 1_000_000 + len(data),
            "target_cohort": "region:eu-west AND hw:rev2", "rollout_percentage": 25.0,
            "compatibility": {"min_firmware": "1.2.0"}, "health_checks": {"max_cpu_percent": 80.0}}  # fmt: skip


def build(work: Path, targets: int, models: int) -> tuple[Path, Path, list[dict[str, object]]]:
    reg, keys = work / "registry", work / "tuf-keys"
    reg.mkdir()
    registry.keygen(work / "cloud")
    cloud = work / "cloud" / "private.pem"
    names = [f"model{i:03d}" for i in range(models)]
    deployments = [manifest(names[i % models], f"1.{i // models}.0") for i in range(targets)]
    key = registry.load_private_key(cloud)
    for d in deployments:  # as registry publish writes them: each with its signed statement
        d["statement"] = registry.statement_envelope(key, d)
    registry.write_index(reg, None, key, lambda signed: signed.update(deployments=deployments))
    tuf_life.init(reg, keys)
    online = tuf_life.online(keys)
    targets_signer = [tuf_life.signer(keys / "targets" / "private.pem")]
    model_signer = tuf_life.signer(cloud)
    repo = Repo(reg)
    for name in names:  # one delegation per model, all in one targets version
        tuf_life.delegate(reg, name, [model_signer.public_key], targets_signer, online)
    changed = {}
    for name in names:
        role = Targets(expires=expiry(time.time(), DELEGATED_EXPIRES_S))
        for d in deployments:
            if d["model_id"] == name:
                text = tuf_targets.manifest_text(d)
                role.targets[str(d["artifact_url"])] = TargetFile(
                    int(d["length"]),
                    {"sha256": str(d["sha256"])},
                    str(d["artifact_url"]),
                    {"custom": {"manifest": text, "site": "*"}},  # type: ignore[call-overload]
                )
        role_md = Metadata(role)
        role_md.sign(model_signer)
        repo.write(role_md, name)
        changed[name] = 1
    repo.publish_online(online, changed=changed)
    return reg, cloud, deployments


async def tuf_sync(
    reg: Path, held: dict[str, bytes], previous: TufSet | None = None
) -> tuple[int, int, float, dict[str, bytes], TufSet]:
    """A refresh as the mirror runs it (``previous``: the set verified from ``held`` last time)."""
    up = Counting(reg)
    root = (reg / "metadata" / "1.root.json").read_bytes()
    t0 = time.process_time()
    s = await refresh(up, "metadata", root, held, time.time(), "site-1", previous)  # type: ignore[arg-type]
    if s.changed:
        s.index()
    else:
        s = previous or s
    return up.bytes, up.requests, time.process_time() - t0, dict(s.files), s


async def index_sync(reg: Path, cloud_pub: bytes, etag: str | None) -> tuple[int, float, str | None]:
    up = Counting(reg)
    key = parse_public_key(cloud_pub, "cloud")
    try:
        got = await up.get("index.json", etag=etag, max_bytes=64 << 20)
    except NotModified:
        return 0, 0.0, etag
    t0 = time.process_time()
    TrustedIndex({keyid(key): key}, "site-1").verify_index(got.body, time.time())
    return up.bytes, time.process_time() - t0, got.etag


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=1000)
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        reg, cloud, _ = build(work, args.targets, args.models)
        pub = (cloud.parent / "public.pem").read_bytes()
        print(
            f"registry: {args.targets} targets over {args.models} models (built in {time.monotonic() - t0:.1f} s)"
        )
        idx_first, _, etag = await index_sync(reg, pub, None)
        tuf_first, tuf_reqs, _, held, current = await tuf_sync(reg, {})
        idx_same, _, _ = await index_sync(reg, pub, etag)
        tuf_same, same_reqs, _, held, current = await tuf_sync(reg, held, current)
        # One model gains a version: both formats published by the real publish path.
        model_file = work / "m.onnx"
        model_file.write_bytes(b"new version")
        tuf_targets.publish(reg, model_file, cloud, tuf_life.online(work / "tuf-keys"), model_id="model000",
                         version="9.0.0", keep=1 << 30)  # fmt: skip
        idx_one, _, _ = await index_sync(reg, pub, etag)
        tuf_one, one_reqs, _, held, current = await tuf_sync(reg, held, current)
        idx_cpu = [(await index_sync(reg, pub, None))[1] for _ in range(args.rounds)]
        tuf_cpu = [(await tuf_sync(reg, {}))[2] for _ in range(args.rounds)]
        # A poll with nothing new: the index's 304 costs no verification; TUF verifies the root
        # probe and the timestamp, and checks the held roles' expiry.
        tuf_idle = [(await tuf_sync(reg, held, current))[2] for _ in range(args.rounds)]
        print(f"{'bytes per site poll':40} {'index':>12} {'TUF':>12}")
        print(f"{'first sync (a new site)':40} {idx_first:>12,} {tuf_first:>12,}   ({tuf_reqs} TUF requests)")
        print(f"{'nothing changed':40} {idx_same:>12,} {tuf_same:>12,}   ({same_reqs} TUF requests)")
        print(f"{'one model gained a version':40} {idx_one:>12,} {tuf_one:>12,}   ({one_reqs} TUF requests)")
        print(f"{'CPU-s of a full verification (median)':40} {statistics.median(idx_cpu):>12.4f} "
              f"{statistics.median(tuf_cpu):>12.4f}   ({args.rounds} rounds)")  # fmt: skip
        print(f"{'CPU-s of a poll with nothing new':40} {0.0:>12.4f} {statistics.median(tuf_idle):>12.4f}")
        sizes = {n: len(b) for n, b in held.items()}
        print("TUF files held:", json.dumps({k: sizes[k] for k in sorted(sizes)[:6]}), "...")


if __name__ == "__main__":
    asyncio.run(main())

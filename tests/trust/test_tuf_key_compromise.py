"""Key-compromise stories (issue 25) across two sites on ``trust.format = "tuf"``:

- one of three root keys stolen: nothing the thief signs alone is accepted (see also the attack
  list: ``root-rotation-old-keys-only``);
- a model key stolen, with the online server (its snapshot and timestamp keys): the thief can list
  targets for that model only (another model's are dropped with the reason); the cloud revokes the
  key, unpublishes what it listed, and rotates the online keys with two root keys; every site drops
  the thief's deployment at its next refresh (well inside one timestamp expiry), and what the thief
  signs afterwards, with every key it stole, is refused everywhere.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AsyncExitStack
from pathlib import Path

from tuf.api.metadata import Metadata, MetaFile, TargetFile, Targets

from gateway.registry import tuf_life as L
from gateway.registry import tuf_targets as T
from gateway.registry.tuf_repo import Online, Repo, to_bytes
from gateway.service.wiring import Gateway
from tests.gw import running, until
from tests.registry.tufkit import TufRegistry, make_tuf_registry
from tests.trust.test_tuf_interop import tuf_settings


def forge(treg: TufRegistry, role: str, paths: list[str], key: str, online: Online) -> None:
    """The thief's publication: ``role`` one version up listing ``paths``, signed by the stolen
    model key, with a snapshot and timestamp from the stolen online keys."""
    repo = Repo(treg.root)
    md: Metadata[Targets] = repo.role(role)
    md.signed.version += 1
    for path in paths:
        data = os.urandom(100)
        manifest = {"model_id": path.split("/")[1], "version": path.split("/")[2], "artifact_url": path,
                    "signature_url": path + ".sig", "sha256": hashlib.sha256(data).hexdigest(),
                    "length": len(data)}  # fmt: skip
        custom = {"manifest": T.manifest_text(manifest), "site": "*"}
        md.signed.targets[path] = TargetFile(
            len(data), {"sha256": manifest["sha256"]}, path, {"custom": custom}
        )
    md.signatures.clear()
    md.sign(L.signer(treg.key(key) / "private.pem"))
    repo.write(md, role)
    # The thief's own snapshot and timestamp (the registry tool would refuse keys the root dropped).
    snap = repo.snapshot()
    snap.signed.version += 1
    snap.signed.meta[f"{role}.json"] = MetaFile.from_data(md.signed.version, to_bytes(md), ["sha256"])
    snap.signatures.clear()
    assert online.snapshot is not None
    snap.sign(online.snapshot)
    repo.write(snap, "snapshot")
    ts = repo.timestamp()
    ts.signed.version += 1
    ts.signed.snapshot_meta = MetaFile.from_data(snap.signed.version, to_bytes(snap), ["sha256"])
    ts.signatures.clear()
    ts.sign(online.timestamp)
    repo.write(ts, "timestamp")


def versions(gw: Gateway) -> set[str]:
    return {d.key for d in gw.mirror.index.deployments} if gw.mirror.index else set()


async def test_a_stolen_model_key_is_contained_revoked_and_stopped_at_every_site(tmp_path: Path) -> None:
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    treg.delegate("counter", "b")
    treg.publish(os.urandom(5000), "detector", "1.0.0", "a")
    treg.publish(os.urandom(5000), "counter", "1.0.0", "b")
    stolen_online = L.online(treg.keys)
    async with AsyncExitStack() as stack:
        sites = [
            await stack.enter_async_context(
                running(tuf_settings(treg, tmp_path / f"site-{i}", str(treg.root)))
            )
            for i in (1, 2)
        ]
        good = {"detector@1.0.0", "counter@1.0.0"}
        for gw in sites:
            await until(lambda gw=gw: versions(gw) == good, 20, "both models at every site")
        # The thief: detector's key plus the online keys. It can list detector versions, not counter's.
        forge(
            treg,
            "detector",
            ["artifacts/detector/6.6.6/x.onnx", "artifacts/counter/6.6.6/x.onnx"],
            "a",
            stolen_online,
        )
        for gw in sites:
            await until(lambda gw=gw: "detector@6.6.6" in versions(gw), 20, "the thief's detector target")
            assert "counter@6.6.6" not in versions(gw)
            assert any("not delegated to detector" in why for _, why in gw.mirror.index.rejected)  # type: ignore[union-attr]
        # The cloud answers: revoke the key, a new one for detector, unpublish, new online keys.
        targets = [L.signer(treg.keys / "targets" / "private.pem")]
        L.revoke(
            treg.root, "detector", L.public_key(treg.key("a") / "public.pem").keyid, targets, stolen_online
        )
        L.delegate(
            treg.root, "detector", [L.public_key(treg.key("a2") / "public.pem")], targets, stolen_online
        )
        T.unpublish(treg.root, "detector", "6.6.6", [L.signer(treg.key("a2") / "private.pem")], stolen_online)
        roots = [L.signer(treg.keys / f"root-{i}" / "private.pem") for i in (1, 2)]
        new_online = Online(
            L.signer(treg.key("snapshot-2") / "private.pem"),
            L.signer(treg.key("timestamp-2") / "private.pem"),
        )
        for role, signer in (("snapshot", new_online.snapshot), ("timestamp", new_online.timestamp)):
            assert signer is not None
            old = L.public_key(treg.keys / role / "public.pem").keyid
            L.rotate(treg.root, role, roots, None, add=[signer.public_key], remove=[old])
        Repo(treg.root).publish_online(new_online)
        for gw in sites:
            await until(lambda gw=gw: versions(gw) == good, 20, "the thief's target gone at every site")
        held = [gw.mirror.index for gw in sites]
        # The thief again, with every key it stole: refused everywhere, the clean state serving.
        forge(treg, "detector", ["artifacts/detector/7.7.7/x.onnx"], "a", stolen_online)
        for gw in sites:
            await until(
                lambda gw=gw: "mirror.rejected_indexes" in gw.stats.last_error, 20, "the stolen keys refused"
            )
        assert [gw.mirror.index for gw in sites] == held
        assert all(versions(gw) == good for gw in sites)

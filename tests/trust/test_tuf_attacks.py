"""The TUF attack list (TUF specification 1.0, section 1.5.2) against a real ``ota-gateway serve``
process on ``trust.format = "tuf"``: each attack is refused with its reason in the log and in
``/status``, and the last good state keeps serving (the same index, the same metadata to devices,
the same verified model bytes).

The upstream is a registry written by ``ota-gateway registry`` and served by a server that lies on
request (per-path overrides: a compromised mirror or a man in the middle); the attacker's
metadata is made with python-tuf's Metadata API and whichever keys the story says were stolen.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, MetaFile, TargetFile, Targets

from gateway.registry import tuf_life as L
from gateway.registry.tuf_repo import Repo, to_bytes
from tests.registry.tufkit import TufRegistry, make_tuf_registry
from tests.trust.tuf_kit import GatewayProcess, LyingUpstream, lying_upstream, tuf_gateway

GOOD = "/artifacts/detector/1.0.0/detector-1.0.0.onnx"


@dataclass
class Scene:
    treg: TufRegistry
    up: LyingUpstream
    gw: GatewayProcess
    good: bytes
    rng: random.Random
    before: tuple[int, bytes] = (0, b"")

    async def mark(self) -> None:
        """The last good state, taken just before the lie is told."""
        self.before = await held_state(self.gw)

    @property
    def repo(self) -> Repo:
        return Repo(self.treg.root)

    def signer(self, name: str) -> L.CryptoSigner:
        """A registry key (root-1, targets, snapshot, timestamp) or a model key (a, b, ...)."""
        path = self.treg.keys / name / "private.pem"
        return L.signer(path if path.exists() else self.treg.key(name) / "private.pem")

    def online(self) -> L.Online:
        return L.online(self.treg.keys)

    def forged_role(self, role: str, target: str, signers: list[str]) -> Metadata[Targets]:
        """``role`` one version up, listing ``target`` too, signed by ``signers`` (stolen keys)."""
        md = self.repo.role(role)
        md.signed.version += 1
        data = self.rng.randbytes(1000)
        manifest = {"model_id": target.split("/")[1], "version": target.split("/")[2], "artifact_url": target,
                    "signature_url": target + ".sig", "sha256": hashlib.sha256(data).hexdigest(),
                    "length": len(data)}  # fmt: skip
        md.signed.targets[target] = TargetFile(
            len(data), {"sha256": manifest["sha256"]}, target, {"custom": {"manifest": json.dumps(manifest)}}
        )
        md.signatures.clear()
        for name in signers:
            md.sign(self.signer(name), append=True)
        return md

    def publish_forged(self, md: Metadata[Targets], role: str) -> None:
        """Written into the registry with a new snapshot and timestamp by the (real) online keys:
        the attacker also holds the online server."""
        self.repo.write(md, role)
        self.repo.publish_online(self.online(), changed={role: md.signed.version})


async def held_state(gw: GatewayProcess) -> tuple[int, bytes]:
    st = await gw.status()
    _, ts = await gw.get("/tuf/metadata/timestamp.json")
    return st["index"]["version"], ts


async def refused(scene: Scene, reason: str) -> None:
    """The attack's reason reaches /status and the log; the last good state keeps serving."""
    st = await scene.gw.until(
        lambda s: reason in s["last_errors"].get("mirror.rejected_indexes", ""), f"refusal with {reason!r}"
    )
    assert "rejected TUF metadata: " in scene.gw.log_text() and reason in scene.gw.log_text()
    assert st["index"]["version"] == scene.before[0]
    assert (await held_state(scene.gw)) == scene.before
    assert await scene.gw.get(GOOD) == (200, scene.good)


async def rollback(scene: Scene) -> str:
    old = (scene.treg.root / "metadata" / "timestamp.json").read_bytes()
    scene.treg.publish(scene.rng.randbytes(3000), "counter", "1.0.0", "b")
    await scene.gw.until(lambda s: s["index"]["version"] > json.loads(old)["signed"]["version"], "counter")
    await scene.mark()
    scene.up.overrides["metadata/timestamp.json"] = old
    return "(rollback)"


async def freeze(scene: Scene) -> str:
    ts = scene.repo.timestamp()
    ts.signed.version += 1
    ts.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ts.signatures.clear()
    ts.sign(scene.signer("timestamp"))
    scene.up.overrides["metadata/timestamp.json"] = to_bytes(ts)
    return "(freeze)"


async def endless_data(scene: Scene) -> str:
    scene.up.overrides["metadata/timestamp.json"] = b"{" + b" " * (8 << 20)
    return "(endless data)"


async def mix_and_match(scene: Scene) -> str:
    """The next detector role is served as the current one's bytes (set before it is published)."""
    version = scene.repo.snapshot().signed.meta["detector.json"].version
    held = (scene.treg.root / "metadata" / f"{version}.detector.json").read_bytes()
    scene.up.overrides[f"metadata/{version + 1}.detector.json"] = held
    scene.treg.publish(scene.rng.randbytes(2000), "detector", "2.0.0", "a")
    return "(mix-and-match"


async def arbitrary_package(scene: Scene) -> str:
    """A genuine new version whose bytes the mirror swaps: the index moves on, the bytes never serve."""
    data = scene.rng.randbytes(50_000)
    scene.treg.publish(data, "detector", "3.0.0", "a", "--chunk-size=0")
    for name in ("detector-3.0.0.onnx", f"{hashlib.sha256(data).hexdigest()}.detector-3.0.0.onnx"):
        scene.up.overrides[f"artifacts/detector/3.0.0/{name}"] = scene.rng.randbytes(len(data))
    await scene.gw.until(
        lambda s: "sha256" in s["last_errors"].get("mirror.rejected_artifacts", ""),
        "the swapped bytes refused",
    )
    status, body = await scene.gw.get("/artifacts/detector/3.0.0/detector-3.0.0.onnx")
    assert status == 503 and body != data
    assert await scene.gw.get(GOOD) == (200, scene.good)
    return ""


async def threshold_not_met(scene: Scene) -> str:
    scene.publish_forged(
        scene.forged_role("segmenter", "artifacts/segmenter/6.0.0/x.onnx", ["c"]), "segmenter"
    )
    return "threshold of trusted keys not met"


async def key_of_another_delegation(scene: Scene) -> str:
    scene.publish_forged(scene.forged_role("detector", "artifacts/detector/6.0.0/x.onnx", ["b"]), "detector")
    return "threshold of trusted keys not met"


async def model_key_lists_another_model(scene: Scene) -> str:
    """detector's key (stolen, with the online keys) lists a counter target in detector's role:
    the role verifies, but its paths do not take the target, which is dropped with its reason."""
    evil = "artifacts/counter/6.6.6/x.onnx"
    scene.publish_forged(scene.forged_role("detector", evil, ["a"]), "detector")
    # The index that dropped it is in effect (the reason reaches last_errors a moment before it is).
    st = await scene.gw.until(
        lambda s: any(evil in what for what, _ in s["index"]["rejected_deployments"]),
        "the foreign target dropped",
    )
    assert "not delegated to detector" in st["last_errors"]["mirror.rejected_deployments"]
    assert "rejected detector: " in scene.gw.log_text()
    assert (await scene.gw.get("/" + evil))[0] == 404
    assert await scene.gw.get(GOOD) == (200, scene.good)
    return ""


async def revoked_key(scene: Scene) -> str:
    L.revoke(scene.treg.root, "detector", L.public_key(scene.treg.key("a") / "public.pem").keyid,
             [scene.signer("targets")], scene.online())  # fmt: skip
    L.delegate(scene.treg.root, "detector", [L.public_key(scene.treg.key("e") / "public.pem")],
               [scene.signer("targets")], scene.online())  # fmt: skip
    L.sign(scene.treg.root, "detector", [scene.signer("e")], scene.online())
    await scene.gw.until(lambda s: "mirror.rejected_indexes" not in s["last_errors"], "no refusal yet")
    version = json.loads((scene.treg.root / "metadata" / "timestamp.json").read_bytes())["signed"]["version"]
    await scene.gw.until(lambda s: s["index"]["version"] == version, "the re-signed detector role")
    await scene.mark()
    scene.publish_forged(scene.forged_role("detector", "artifacts/detector/6.0.0/x.onnx", ["a"]), "detector")
    return "threshold of trusted keys not met"


async def root_with_old_keys_only(scene: Scene) -> str:
    """One stolen root key (of 2-of-3) signs a root that hands the thief every role."""
    root = scene.repo.root()
    thief = scene.signer("thief")
    for role in ("root", "targets", "snapshot", "timestamp"):
        for keyid in list(root.signed.roles[role].keyids):
            root.signed.revoke_key(keyid, role)
        root.signed.add_key(thief.public_key, role)
    root.signed.roles["root"].threshold = 1
    root.signed.version += 1
    root.sign(scene.signer("root-1"))
    root.sign(thief, append=True)
    scene.up.overrides["metadata/2.root.json"] = to_bytes(root)
    return "2.root.json"


async def timestamp_key_changes_content(scene: Scene) -> str:
    """The online timestamp key alone cannot change content: its own snapshot is not trusted."""
    forged = scene.forged_role("detector", "artifacts/detector/6.0.0/x.onnx", ["a"])
    forged_bytes = to_bytes(forged)
    snap = scene.repo.snapshot()
    snap.signed.version += 1
    snap.signed.meta["detector.json"] = MetaFile.from_data(forged.signed.version, forged_bytes, ["sha256"])
    snap.signatures.clear()
    snap.sign(scene.signer("timestamp"))
    snap_bytes = to_bytes(snap)
    ts = scene.repo.timestamp()
    ts.signed.version += 1
    ts.signed.snapshot_meta = MetaFile.from_data(snap.signed.version, snap_bytes, ["sha256"])
    ts.signatures.clear()
    ts.sign(scene.signer("timestamp"))
    scene.up.overrides.update({
        "metadata/timestamp.json": to_bytes(ts),
        f"metadata/{snap.signed.version}.snapshot.json": snap_bytes,
        f"metadata/{forged.signed.version}.detector.json": forged_bytes,
    })  # fmt: skip
    return f"{snap.signed.version}.snapshot.json"


ATTACKS: dict[str, Callable[[Scene], Awaitable[str]]] = {
    "arbitrary-package": arbitrary_package,
    "rollback": rollback,
    "indefinite-freeze": freeze,
    "endless-data": endless_data,
    "mix-and-match": mix_and_match,
    "threshold-not-met": threshold_not_met,
    "key-of-another-delegation": key_of_another_delegation,
    "revoked-key": revoked_key,
    "model-key-lists-another-model": model_key_lists_another_model,
    "root-rotation-old-keys-only": root_with_old_keys_only,
    "timestamp-key-changes-content": timestamp_key_changes_content,
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_tuf_attack_is_refused_and_the_last_good_state_serves(
    tmp_path: Path, attack: str, seed: int
) -> None:
    rng = random.Random(f"{attack}/{seed}")
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    treg.delegate("counter", "b")
    treg.delegate("segmenter", "c", "d", threshold=2)
    good = rng.randbytes(rng.randrange(10_000, 200_000))
    treg.publish(good, "detector", "1.0.0", "a")
    treg.publish(rng.randbytes(500), "segmenter", "1.0.0", "c", f"--cosign={treg.key('d') / 'private.pem'}")
    async with lying_upstream(treg.root) as up, tuf_gateway(treg, tmp_path / "data", up.url) as gw:
        await gw.until(lambda s: s["index"] is not None, "the first index")
        scene = Scene(treg, up, gw, good, rng)
        deadline = time.monotonic() + 30
        while (await gw.get(GOOD))[0] != 200:  # the verified model may still be arriving
            assert time.monotonic() < deadline, "the good model never served"
            await asyncio.sleep(0.05)  # polling a condition with a deadline
        await scene.mark()
        reason = await ATTACKS[attack](scene)
        if reason:
            await refused(scene, reason)
        up.overrides.clear()  # the attack stops: the site takes the registry's genuine state again
        version = json.loads((treg.root / "metadata" / "timestamp.json").read_bytes())["signed"]["version"]
        if attack in ("rollback", "indefinite-freeze", "endless-data", "mix-and-match", "arbitrary-package",
                      "root-rotation-old-keys-only", "timestamp-key-changes-content"):  # fmt: skip
            await gw.until(lambda s: s["index"]["version"] == version, "the genuine state after the attack")


async def _baseline(tmp_path: Path, rng: random.Random) -> tuple[TufRegistry, bytes]:
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    treg.delegate("counter", "b")
    good = rng.randbytes(rng.randrange(10_000, 100_000))
    treg.publish(good, "detector", "1.0.0", "a")
    return treg, good


def _ts_version(treg: TufRegistry) -> int:
    return int(json.loads((treg.root / "metadata" / "timestamp.json").read_bytes())["signed"]["version"])


@pytest.mark.parametrize("seed", [1, 2])
async def test_fast_forward_by_a_stolen_timestamp_key_is_undone_by_rotating_it(
    tmp_path: Path, seed: int
) -> None:
    """The thief fast-forwards the timestamp version (TUF 1.0, 5.3.11): the genuine timestamps are
    then refused as rollbacks, until the root rotates the timestamp key; the site then drops the
    thief's timestamp (it no longer verifies) and takes the genuine one again."""
    rng = random.Random(seed)
    treg, good = await _baseline(tmp_path, rng)
    async with lying_upstream(treg.root) as up, tuf_gateway(treg, tmp_path / "data", up.url) as gw:
        await gw.until(
            lambda s: s["index"] is not None and s["index"]["version"] == _ts_version(treg), "index"
        )
        repo = Repo(treg.root)
        forged = repo.timestamp()
        forged.signed.version = 10**6 + rng.randrange(1000)
        forged.signatures.clear()
        forged.sign(L.signer(treg.keys / "timestamp" / "private.pem"))
        up.overrides["metadata/timestamp.json"] = to_bytes(forged)
        await gw.until(
            lambda s: s["index"]["version"] == forged.signed.version, "the fast-forwarded timestamp"
        )
        up.overrides.clear()
        repo.refresh_timestamp(L.signer(treg.keys / "timestamp" / "private.pem"))
        await gw.until(
            lambda s: "(rollback)" in s["last_errors"].get("mirror.rejected_indexes", ""), "rollback"
        )
        new_key = treg.key("timestamp-2")
        roots = [L.signer(treg.keys / f"root-{i}" / "private.pem") for i in (1, 2)]
        L.rotate(treg.root, "timestamp", roots, None, add=[L.public_key(new_key / "public.pem")],
                 remove=[L.public_key(treg.keys / "timestamp" / "public.pem").keyid])  # fmt: skip
        repo.refresh_timestamp(L.signer(new_key / "private.pem"))
        await gw.until(lambda s: s["index"]["version"] == _ts_version(treg), "the genuine timestamp again")
        assert _ts_version(treg) < forged.signed.version
        assert (await gw.get("/tuf/metadata/2.root.json"))[0] == 200
        assert await gw.get(GOOD) == (200, good)


async def test_rollback_floor_holds_across_a_restart(tmp_path: Path) -> None:
    rng = random.Random(7)
    treg, good = await _baseline(tmp_path, rng)
    old = (treg.root / "metadata" / "timestamp.json").read_bytes()
    treg.publish(rng.randbytes(3000), "counter", "1.0.0", "b")
    async with lying_upstream(treg.root) as up:
        async with tuf_gateway(treg, tmp_path / "data", up.url) as gw:
            await gw.until(
                lambda s: s["index"] is not None and s["index"]["version"] == _ts_version(treg), "index"
            )
        up.overrides["metadata/timestamp.json"] = old  # the old timestamp, to a gateway just restarted
        async with tuf_gateway(treg, tmp_path / "data", up.url) as gw:
            st = await gw.until(
                lambda s: "(rollback)" in s["last_errors"].get("mirror.rejected_indexes", ""),
                "rollback refused",
            )
            assert st["index"]["version"] == _ts_version(treg)  # the held set, re-verified at start
            assert await gw.get(GOOD) == (200, good)

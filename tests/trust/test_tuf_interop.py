"""Interoperability: python-tuf's own ``ngclient.Updater``, as a device, refreshes metadata and
downloads a model through a gateway on ``trust.format = "tuf"``, and through a child gateway
behind it, from a registry written by ``ota-gateway registry``. Every byte it takes is checked
against the cloud's keys (the gateway serves the metadata it verified, unchanged)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from gateway.core import settings as S
from gateway.registry import tuf_life, tuf_targets
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until
from tests.registry.tufkit import TufRegistry, make_tuf_registry, updater
from tests.registry.tufkit import run as run_cli

MODEL = "artifacts/detector/1.0.0/detector-1.0.0.onnx"


def tuf_settings(treg: TufRegistry, data: Path, upstream: str, metadata: str = "metadata") -> S.Settings:
    reg = Registry(treg.root, treg.models, "test-site")
    trust = S.TrustSettings(
        format="tuf", tuf_root=str(treg.root / "metadata" / "1.root.json"), tuf_metadata=metadata
    )
    return gateway_settings(reg, data, upstream, trust=trust)


def held_version(gw: Gateway) -> int | None:
    return gw.mirror.index.version if gw.mirror.index is not None else None


async def device_download(
    tmp: Path, name: str, gw: Gateway, bootstrap: bytes
) -> tuple[bytes, dict[str, object]]:
    def fetch() -> tuple[bytes, dict[str, object]]:
        base = base_url(gw)
        device = updater(tmp / name, f"{base}/tuf/metadata/", f"{base}/", bootstrap)
        device.refresh()
        info = device.get_targetinfo(MODEL)
        assert info is not None
        return Path(device.download_target(info)).read_bytes(), json.loads(info.custom["manifest"])

    return await asyncio.to_thread(fetch)


async def test_python_tuf_updater_through_a_gateway_and_a_child_gateway(tmp_path: Path) -> None:
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a", "b", threshold=2)
    data = os.urandom(300_000)
    treg.publish(data, "detector", "1.0.0", "a", "--cohort=hw:rev2")
    assert await asyncio.to_thread(
        run_cli,
        "registry", "sign", str(treg.root), "detector", f"--key={treg.key('b') / 'private.pem'}",
        f"--online-keys={treg.keys}",
    ) == 0  # fmt: skip
    async with running(tuf_settings(treg, tmp_path / "parent", str(treg.root))) as parent:
        await until(lambda: parent.mirror.index is not None and parent.store.is_verified(
            parent.mirror.index.deployments[0].sha256), 20, "the parent's verified model")  # fmt: skip
        (dep,) = parent.mirror.index.deployments
        assert (dep.model_id, dep.version, dep.target_cohort) == ("detector", "1.0.0", "hw:rev2")
        got, manifest = await device_download(tmp_path, "device-1", parent, treg.first_root)
        assert got == data and manifest["version"] == "1.0.0"
        # What the device was served is the cloud's bytes, unchanged.
        snap = (treg.root / "metadata" / "timestamp.json").read_bytes()
        assert parent.trust.metadata("timestamp.json") == snap
        child_settings = tuf_settings(treg, tmp_path / "child", base_url(parent) + "/", "tuf/metadata")
        async with running(child_settings) as child:
            await until(lambda: child.mirror.index is not None and child.store.is_verified(
                child.mirror.index.deployments[0].sha256), 20, "the child's verified model")  # fmt: skip
            got, _ = await device_download(tmp_path, "device-2", child, treg.first_root)
            assert got == data


async def test_coordinator_commands_ride_in_the_models_own_role(tmp_path: Path) -> None:
    """``registry command`` on a TUF registry signs the hold into the model's role; a command for
    a model another role signs is dropped with its reason."""
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    treg.delegate("counter", "b")
    treg.publish(os.urandom(2000), "detector", "1.0.0", "a")
    treg.publish(os.urandom(2000), "counter", "1.0.0", "b")
    key_a, key_b = treg.key("a") / "private.pem", treg.key("b") / "private.pem"
    online = f"--online-keys={treg.keys}"
    async with running(tuf_settings(treg, tmp_path / "data", str(treg.root))) as gw:
        await until(
            lambda: gw.mirror.index is not None and len(gw.mirror.index.deployments) == 2, 20, "index"
        )
        assert (
            run_cli(
                "registry", "command", str(treg.root), "detector@1.0.0", "paused", f"--key={key_a}", online
            )
            == 0
        )
        await until(lambda: gw.mirror.index.commands == {"detector@1.0.0": "paused"}, 20, "the hold")  # type: ignore[union-attr]
        # counter's key signs an abort of detector into counter's role: not counter's to say.
        tuf_targets.set_command(
            treg.root, "counter@1.0.0", "aborted", [tuf_life.signer(key_b)], tuf_life.online(treg.keys)
        )
        md = tuf_life.Repo(treg.root).role("counter")
        md.signed.unrecognized_fields["x-ota-commands"]["detector@1.0.0"] = "aborted"
        md.signed.version += 1
        md.signatures.clear()
        md.sign(tuf_life.signer(key_b))
        tuf_life.Repo(treg.root).write(md, "counter")
        tuf_life.Repo(treg.root).publish_online(
            tuf_life.online(treg.keys), changed={"counter": md.signed.version}
        )
        await until(
            lambda: gw.mirror.index.commands.get("counter@1.0.0") == "aborted", 20, "counter's own abort"
        )  # type: ignore[union-attr]
        index = gw.mirror.index
        assert index is not None and index.commands["detector@1.0.0"] == "paused"
        assert any("detector is not delegated to counter" in why for _, why in index.rejected)

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
from gateway.service import Gateway
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

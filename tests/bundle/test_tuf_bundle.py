"""A bundle from a registry that publishes both formats imports on a site of either format: the
signed index on an ``index`` site, the TUF metadata (``metadata/``) on a ``tuf`` site, through the
mirror's own path; an old or tampered TUF bundle is refused with its reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.bundle.export import export
from gateway.bundle.importer import ArtifactOutcome, IndexOutcome
from gateway.core import settings as S
from tests.bundle.kit import members, rewrite
from tests.conftest import Registry
from tests.gw import OPEN_FIRST, gateway_settings, running
from tests.registry.tufkit import make_tuf_registry


async def test_one_bundle_imports_on_an_index_site_and_on_a_tuf_site(tmp_path: Path) -> None:
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    model = os.urandom(200_000)
    treg.publish(model, "detector", "1.0.0", "a")
    v1 = tmp_path / "v1.tar"
    export(treg.root, None, v1)
    assert "metadata/timestamp.json" in members(v1) and "index.json" in members(v1)
    treg.publish(os.urandom(1000), "detector", "2.0.0", "a")
    v2 = tmp_path / "v2.tar"
    export(treg.root, None, v2)
    reg = Registry(treg.root, treg.key("a"), "test-site")  # the index is signed by the model's key
    index_site = gateway_settings(reg, tmp_path / "index-site", upstream="", gates=OPEN_FIRST)
    async with running(index_site) as gw:
        report = await gw.imports.importer.run(v1, timeout_s=30)
        assert report.index is IndexOutcome.ACCEPTED and report.ok, report.lines()
    trust = S.TrustSettings(format="tuf", tuf_root=str(treg.root / "metadata" / "1.root.json"))
    tuf_site = gateway_settings(reg, tmp_path / "tuf-site", upstream="", gates=OPEN_FIRST, trust=trust)
    async with running(tuf_site) as gw:
        report = await gw.imports.importer.run(v1, timeout_s=30)
        assert report.index is IndexOutcome.ACCEPTED and report.ok, report.lines()
        assert report.artifacts == {"detector@1.0.0": (ArtifactOutcome.VERIFIED, "")}
        assert (await gw.imports.importer.run(v1, timeout_s=30)).index is IndexOutcome.HELD
        assert (await gw.imports.importer.run(v2, timeout_s=30)).index is IndexOutcome.ACCEPTED
        held = gw.mirror.index
        old = await gw.imports.importer.run(v1, timeout_s=30)
        assert old.index is IndexOutcome.REFUSED and "(rollback)" in old.why, old.lines()

        def tamper(files: dict[str, bytes]) -> None:  # the newest detector role, one byte longer
            name = max(
                (n for n in files if n.endswith(".detector.json")),
                key=lambda n: int(n.split("/")[1].split(".")[0]),
            )
            doc = json.loads(files[name])
            doc["signed"]["targets"]["artifacts/detector/3.0.0/detector-3.0.0.onnx"]["length"] += 1
            files[name] = json.dumps(doc).encode()

        treg.publish(os.urandom(1000), "detector", "3.0.0", "a")
        export(treg.root, None, tmp_path / "v3.tar")
        bad = rewrite(tmp_path / "v3.tar", tmp_path / "bad.tar", tamper)
        report = await gw.imports.importer.run(bad, timeout_s=30)
        assert report.index is IndexOutcome.REFUSED and "(mix-and-match" in report.why, report.lines()
        assert gw.mirror.index is held

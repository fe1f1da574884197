"""The trusted clock rules on a TUF site: a timestamp issued far ahead of a trusted clock is
refused (and the floor does not follow it); expiry is judged by the trusted clock; a TUF site
without its root stops at start-up with one line naming the key."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway.core import settings as S
from gateway.core.errors import ConfigError
from gateway.registry import tuf_life
from gateway.registry.tuf_repo import Repo
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until
from tests.registry.tufkit import make_tuf_registry

YEAR = 365 * 86400.0


def _settings(root: Path, data: Path, upstream: str, **trust: str) -> S.Settings:
    reg = Registry(root, data.parent, "test-site")
    return gateway_settings(reg, data, upstream, trust=S.TrustSettings(**trust))  # type: ignore[arg-type]


async def test_a_timestamp_from_the_future_is_refused_and_the_floor_stays(tmp_path: Path) -> None:
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    treg.publish(os.urandom(3000), "detector", "1.0.0", "a")
    root = str(treg.root / "metadata" / "1.root.json")
    settings = _settings(treg.root, tmp_path / "data", str(treg.root), format="tuf", tuf_root=root)
    signer = tuf_life.signer(treg.keys / "timestamp" / "private.pem")
    async with running(settings) as gw:
        await until(lambda: gw.mirror.index is not None, 20, "the first set")
        held = gw.mirror.index
        assert held is not None and held.issued is not None and abs(held.issued - time.time()) < 60
        Repo(treg.root).refresh_timestamp(signer, now=time.time() + 10 * YEAR, expires_s=11 * YEAR)
        await until(
            lambda: (
                "ahead of the trusted local clock" in gw.stats.last_error.get("mirror.rejected_indexes", "")
            ),
            20,
            "the future timestamp refused",
        )
        assert gw.mirror.index is held and gw.trust.floor <= time.time() + 1
        version = Repo(treg.root).refresh_timestamp(signer)  # the cloud fixes its clock
        await until(
            lambda: gw.mirror.index is not None and gw.mirror.index.version == version, 20, "the next one"
        )
        assert gw.trust.floor <= time.time() + 1


async def test_a_tuf_site_without_its_root_stops_with_one_line(tmp_path: Path) -> None:
    settings = _settings(tmp_path, tmp_path / "data", "", format="tuf")
    with pytest.raises(ConfigError, match=r"trust\.tuf_root: expected the trusted root\.json file"):
        Gateway.from_settings(settings)
    bad = tmp_path / "root.json"
    bad.write_text('{"signed": {}, "signatures": []}')
    settings = _settings(tmp_path, tmp_path / "data", "", format="tuf", tuf_root=str(bad))
    with pytest.raises(
        ConfigError, match=r"trust\.tuf_root: expected a TUF root\.json signed by its own keys"
    ):
        Gateway.from_settings(settings)


async def test_a_damaged_held_set_is_moved_aside_and_fetched_again(tmp_path: Path) -> None:
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    treg.publish(os.urandom(3000), "detector", "1.0.0", "a")
    root = str(treg.root / "metadata" / "1.root.json")
    settings = _settings(treg.root, tmp_path / "data", str(treg.root), format="tuf", tuf_root=root)
    async with running(settings) as gw:
        await until(lambda: gw.mirror.index is not None, 20, "the first set")
        version = gw.mirror.index.version  # type: ignore[union-attr]
    held = tmp_path / "data" / "trust" / "tuf.json"
    held.write_bytes(held.read_bytes()[:100])  # a torn write the atomic rename never allows, or a bad disk
    (tmp_path / "data" / "trust" / "state.json").write_text("{not json")
    async with running(settings) as gw:
        assert sorted(r["file"] for r in gw.trust.recovered) == sorted(
            [str(tmp_path / "data" / "trust" / "state.json"), str(held)]
        )
        assert list(held.parent.glob("tuf.json.corrupt-*"))
        await until(
            lambda: gw.mirror.index is not None and gw.mirror.index.version == version, 20, "fetched again"
        )

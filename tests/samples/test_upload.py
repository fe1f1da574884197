"""The upload's answers from a real nginx: a blob the server refuses for good is dropped and
counted, and the samples behind it still go; a wrong token is retried, never dropped."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.core import settings as S
from gateway.runtime.stats import Stats
from gateway.samples.desk import SampleDesk
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until
from tests.samples.upload_server import TOKEN, stored, upload_server

SMALL = {"reason": "random", "model_version": "1", "class": "car", "confidence": 0.9, "embedding": [1.0, 2.0]}


async def test_a_blob_refused_for_good_does_not_block_the_rest(reg: Registry, tmp_path: Path) -> None:
    root = tmp_path / "up"
    big = os.urandom(8192)
    with upload_server(root, max_body="4k") as up:  # nginx answers 413 past 4 KiB
        s = gateway_settings(
            reg,
            tmp_path / "data",
            samples={"enabled": True, "raw": True, "upload_url": up.url + "/samples", "upload_token": TOKEN,
                     "choose_interval_s": 0.1, "budget_bytes_per_day": 1 << 30},
        )  # fmt: skip
        async with running(s) as gw, aiohttp.ClientSession() as http:
            error = {"reason": "error", "model_version": "1", "class": "car", "confidence": 0.2,
                     "raw": base64.b64encode(big).decode()}  # fmt: skip
            for body in (error, SMALL):  # the error goes first, and is refused
                async with http.post(f"{base_url(gw)}/devices/cam-1/samples", json=body) as r:
                    assert r.status == 200
            small = hashlib.sha256(struct.pack("<2f", 1.0, 2.0)).hexdigest()
            await until(lambda: small in stored(root), 10, "the small sample uploaded")
            await until(lambda: gw.samples.status()["counts"].get("refused") == {"error": 1}, 10, "refused")
            assert hashlib.sha256(big).hexdigest() not in stored(root)
            assert (
                gw.samples.status()["waiting_upload"] == 0
                and "413" in gw.stats.last_error["samples.refused_by_server"]
            )


async def test_a_wrong_token_is_retried_and_nothing_is_dropped(reg: Registry, tmp_path: Path) -> None:
    root = tmp_path / "up"
    with upload_server(root) as up:
        s = gateway_settings(
            reg,
            tmp_path / "data",
            samples={"enabled": True, "upload_url": up.url + "/samples", "upload_token": "wrong",
                     "choose_interval_s": 0.1, "budget_bytes_per_day": 1 << 30},
            mirror={"upstream": str(reg.root), "retry_initial_s": 0.05, "retry_max_s": 0.1},
        )  # fmt: skip
        async with running(s) as gw, aiohttp.ClientSession() as http:
            async with http.post(f"{base_url(gw)}/devices/cam-1/samples", json=SMALL) as r:
                assert r.status == 200
            await until(lambda: gw.samples.status()["upload_failures"] >= 3, 10, "retries")
            st = gw.samples.status()
            assert st["waiting_upload"] == 1 and "401" in st["last_failure"] and "refused" not in st["counts"]
            assert stored(root) == {}


class Journal:
    """The outbox's ``append_once`` as a list (the desk's narrow seam; the real one is in the system tests)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def append_once(self, kind: str, body: dict[str, Any], now: float, *, key: str) -> bool:
        self.records.append((kind, body))
        return True


async def test_a_blob_that_rotted_on_disk_is_never_uploaded_under_its_name(tmp_path: Path) -> None:
    root = tmp_path / "up"
    with upload_server(root) as up:
        settings = S.Settings(
            data_dir=str(tmp_path / "data"),
            samples=S.SamplesSettings(enabled=True, upload_url=up.url + "/samples", upload_token=TOKEN,
                                      budget_bytes_per_day=1 << 30),
        )  # fmt: skip
        journal = Journal()
        now = time.time()
        async with SampleDesk(settings, tmp_path / "data", journal, Stats(), time.time) as desk:
            good = await desk.take("cam-1", SMALL, now)
            bad = await desk.take("cam-1", {**SMALL, "embedding": [3.0]}, now)
            assert await desk._call(desk.store.choose, now) == 2
            desk.store.cache[f"blob:{bad.sha256}"] = b"rotten"
            await desk._upload_chosen()
            assert set(stored(root)) == {good.sha256}
            assert [body["sha256"] for _, body in journal.records] == [good.sha256]
            assert (
                desk.status()["counts"]["refused"] == {"random": 1} and desk.status()["waiting_upload"] == 0
            )

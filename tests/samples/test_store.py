"""The sample store on real files: bounded by priority, de-duplicated, durable across a reopen,
and moved aside (the gateway starting with a fresh one) when it is damaged."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from pathlib import Path

import diskcache
import pytest

from gateway.core.samples.budget import DAY_S
from gateway.core.samples.offer import EMBEDDING, Offer, Reason
from gateway.core.samples.settings import SamplesSettings
from gateway.samples.store import SampleStore
from tests.conftest import Registry
from tests.gw import gateway_settings, running

NOON = 20_500 * DAY_S + DAY_S / 2


def offer(n: int, reason: Reason = Reason.RANDOM, size_floats: int = 25) -> Offer:
    content = struct.pack(f"<{size_floats}f", *([float(n)] * size_floats))
    return Offer(reason, "m", "1.0", "person", 0.5, EMBEDDING, content)


def test_past_its_bound_the_lowest_priority_oldest_makes_room(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "s", SamplesSettings(store_max_bytes=300))
    store.open()
    try:
        assert store.put("a", offer(1, Reason.RANDOM), NOON).outcome == "new"
        assert store.put("a", offer(2, Reason.ERROR), NOON + 1).outcome == "new"
        assert store.put("a", offer(3, Reason.RANDOM), NOON + 2).outcome == "new"  # 300 bytes: full
        assert store.put("b", offer(4, Reason.USER_CORRECTED), NOON + 3).outcome == "new"  # drops 1
        assert store.put("b", offer(5, Reason.RANDOM), NOON + 4).outcome == "new"  # drops 3
        kept = sorted(m["reason"] for m in store.meta.values())
        assert kept == ["error", "random", "user_corrected"] and store.kept_bytes == 300
        assert store.counts["dropped_full:random"] == 2
        # a newer random sample pushes out the older one; among errors only, it is not kept itself
        assert store.put("b", offer(6, Reason.RANDOM), NOON + 5).outcome == "new"
        assert store.put("c", offer(7, Reason.ERROR), NOON + 6).outcome == "new"  # drops 6
        assert store.put("c", offer(8, Reason.ERROR), NOON + 7).outcome == "new"  # drops 4
        assert store.put("c", offer(9, Reason.RANDOM), NOON + 8).outcome == "dropped_full"
        assert sorted(m["reason"] for m in store.meta.values()) == ["error"] * 3
    finally:
        store.close()


def test_chosen_samples_are_never_dropped_and_state_survives_a_reopen(tmp_path: Path) -> None:
    settings = SamplesSettings(store_max_bytes=200, budget_bytes_per_day=10**9)
    store = SampleStore(tmp_path / "s", settings)
    store.open()
    store.put("a", offer(1), NOON)
    store.put("a", offer(2), NOON)
    assert store.choose(NOON + 1) == 2
    assert store.put("a", offer(3), NOON + 2).outcome == "dropped_full"  # chosen ones stay
    sha = store.chosen()[0][0]
    store.sent(sha)
    assert store.put("b", offer(1), NOON + 3).outcome == "duplicate"  # sent: remembered by hash
    store.close()
    again = SampleStore(tmp_path / "s", settings)
    again.open()
    try:
        assert [h for h, _ in again.chosen()] == [h for h, _ in store.chosen()] and len(again.chosen()) == 1
        assert again.ledger.spent == 200 and again.counts["sent:random"] == 1
        assert again.put("c", offer(1), NOON + 4).outcome == "duplicate"
        assert again.blob(again.chosen()[0][0]) == offer(2).content
    finally:
        again.close()


def test_a_day_later_what_was_not_chosen_is_dropped_by_budget(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "s", SamplesSettings(budget_bytes_per_day=0))
    store.open()
    try:
        store.put("a", offer(1, Reason.ERROR), NOON)
        assert store.choose(NOON + 60) == 0 and len(store.meta) == 1
        assert store.choose(NOON + DAY_S) == 0 and store.meta == {}
        assert store.counts["dropped_budget:error"] == 1
    finally:
        store.close()


def damage_garbage(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "cache.db").write_bytes(b"this is not SQLite" * 100)


def damage_json(folder: Path) -> None:
    cache = diskcache.Cache(str(folder))
    cache["meta:" + "ab" * 32] = "{not json"
    cache.close()


def damage_shape(folder: Path) -> None:
    cache = diskcache.Cache(str(folder))
    cache["meta:" + "ab" * 32] = json.dumps({"device": "a", "reason": "error", "state": "chosen"})
    cache["ledger"] = json.dumps({"day": "today"})
    cache.close()


@pytest.mark.parametrize("damage", [damage_garbage, damage_json, damage_shape])
async def test_a_damaged_store_is_moved_aside_and_the_gateway_starts_with_a_fresh_one(
    reg: Registry, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    data = tmp_path / "data"
    damage(data / "samples")
    async with running(gateway_settings(reg, data, samples={"enabled": True})) as gw:
        recovered = [r for r in gw.status_view.status()["recovered"] if r["file"].endswith("samples")]
        assert len(recovered) == 1 and "unreadable" in recovered[0]["problem"], recovered
        assert await asyncio.to_thread(Path(recovered[0]["moved_to"]).exists)  # never deleted
        assert gw.samples.store.meta == {}
        kept = await gw.samples.take("cam-1", {"reason": "error", "model_version": "1", "class": "c",
                                               "confidence": 0.1, "embedding": [1.0]}, NOON)  # fmt: skip
        assert kept.outcome == "new"

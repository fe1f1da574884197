"""Inventory merging, bounds, persistence and the installer's pinned attributes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.core.errors import ConfigError
from gateway.inventory.store import Inventory, load_inventory_file


def test_sources_merge_and_file_wins_for_its_keys(tmp_path: Path) -> None:
    inv = Inventory(None)
    inv.apply_file({"cam-1": {"region": "eu-west", "line": "3"}}, now=1)
    inv.upsert("cam-1", {"region": "us-east", "hw": "rev2", "model_version": "1.0.0"}, source="poll", now=2)
    rec = inv.get("cam-1")
    assert rec is not None
    assert rec.attrs == {"region": "eu-west", "line": "3", "hw": "rev2"}
    assert rec.model_version == "1.0.0"
    assert rec.sources == {"file", "poll"}
    assert rec.last_seen == 2


def test_mdns_gone_marks_gone_only_without_other_live_source() -> None:
    inv = Inventory(None)
    inv.upsert("a", {"hw": "x"}, source="mdns", now=1)
    inv.upsert("b", {"hw": "x"}, source="mdns", now=1)
    inv.upsert("b", {}, source="poll", now=2)
    inv.gone("a", source="mdns", now=3)
    inv.gone("b", source="mdns", now=3)
    assert inv.get("a").gone
    assert not inv.get("b").gone
    assert [r.device_id for r in inv.live()] == ["b"]


def test_events_update_version_and_are_reported() -> None:
    inv = Inventory(None)
    inv.event("a", "activated", model_id="det", version="2.0.0", now=5)
    assert inv.get("a").model_version == "2.0.0"
    assert inv.get("a").last_event == "activated"
    changes, dropped = inv.drain_changes()
    assert changes[-1]["event"] == "activated"
    assert dropped == 0
    assert inv.drain_changes() == ([], 0)


def test_bounded_forgets_longest_unseen() -> None:
    inv = Inventory(None, max_devices=3)
    for i in range(5):
        inv.upsert(f"d{i}", {}, source="poll", now=i)
    assert sorted(inv.devices) == ["d2", "d3", "d4"]


def test_attrs_bounded() -> None:
    inv = Inventory(None)
    inv.upsert("a", {f"k{i}": "v" * 1000 for i in range(100)}, source="poll", now=1)
    rec = inv.get("a")
    # The first 32 are kept, each cut to 128 characters; the rest dropped.
    assert rec.attrs == {f"k{i}": "v" * 128 for i in range(32)}


async def test_a_write_that_fails_is_tried_again_at_the_next_flush(tmp_path: Path) -> None:
    """The inventory file cannot be replaced (a directory stands in its place): nothing raises, and
    the next flush writes it once it can, without waiting for a new change or the flush interval."""
    path = tmp_path / "inventory.json"
    inv = Inventory(path, flush_interval_s=30.0)
    inv.upsert("dev-1", {"hw": "rev2"}, source="poll", now=100.0)
    path.mkdir()
    await inv.flush(100.0, force=True)  # os.replace onto a directory: a StorageError, kept quiet
    path.rmdir()
    await inv.flush(101.0)  # not forced, well inside the interval
    assert [d["device_id"] for d in json.loads(path.read_text())["devices"]] == ["dev-1"]


async def test_persisted_across_restart(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "inventory.json")
    inv.upsert("a", {"hw": "rev1", "model_version": "1.0"}, source="poll", now=1)
    await inv.flush(now=100, force=True)
    again = Inventory(tmp_path / "inventory.json")
    again.load()
    assert again.get("a").attrs == {"hw": "rev1"}
    assert again.get("a").model_version == "1.0"


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ("{", "(syntax)"),
        ('{"devices": []}', "devices"),
        ('{"devices": {"../x": {}}}', "devices.../x"),
        ('{"devices": {"a": {"hw": 2}}}', "devices.a"),
    ],
)
def test_bad_inventory_file_names_the_entry(tmp_path: Path, doc: str, key: str) -> None:
    p = tmp_path / "inv.json"
    p.write_text(doc)
    with pytest.raises(ConfigError) as err:
        load_inventory_file(p)
    assert str(p) in str(err.value)
    assert key in str(err.value)


def test_example_inventory_file_loads() -> None:
    ex = Path(__file__).parent.parent.parent / "config" / "inventory.example.json"
    assert load_inventory_file(ex)
    json.loads(ex.read_text())


@pytest.mark.parametrize("seed", range(20))
def test_a_repeated_poll_records_what_a_full_merge_would(seed: int) -> None:
    """The poll fast path (same attributes as the device's last poll: only last_seen moves) leaves
    the same records, changes and version as merging every poll in full, whatever else happens."""
    import random

    rng = random.Random(seed)
    fast, full = Inventory(None, max_devices=6), Inventory(None, max_devices=6)
    full._last_poll = _Forgetful()  # never remembers a poll: every poll takes the full merge
    pinned = {"dev-1": {"hw": "rev9"}}
    for inv in (fast, full):
        inv.apply_file(pinned, now=0)
    for step in range(400):
        dev = f"dev-{rng.randrange(8)}"
        op = rng.randrange(10)
        attrs = rng.choice(
            [{"hw": "rev2"}, {"hw": "rev2", "model_version": "1.0.0"}, {"model": "det", "model_id": "x"}, {}]
        )
        event = rng.choice(["activated", "rolled_back"])
        blocked = rng.choice([None, "3.0.0"])
        for inv in (fast, full):
            if op < 6:
                inv.upsert(dev, dict(attrs), source="poll", now=step)
            elif op == 6:
                inv.upsert(dev, {"hw": "rev3"}, source="mdns", now=step)
            elif op == 7:
                inv.event(dev, event, model_id="det", version="2.0.0", now=step)
            elif op == 8:
                inv.gone(dev, source="mdns", now=step)
            else:
                inv.set_blocked(dev, blocked, now=step)
        if rng.random() < 0.2:  # reading folds the polls' times in: let them pile up in between
            assert fast.records() == full.records(), step
        assert list(fast.changes) == list(full.changes), step
        assert fast.version == full.version, step
    assert fast.records() == full.records()


class _Forgetful(dict):  # type: ignore[type-arg]
    def __setitem__(self, key: object, value: object) -> None:
        pass

"""The clock floor as persisted by TrustState: real signed indexes, real files, the system clock passed in."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.core.errors import ExpiredError
from gateway.core.manifest import parse_time
from gateway.runtime import atomic
from gateway.trust.clock import FutureIssuedError
from gateway.trust.keys import load_trusted_keys
from gateway.trust.state import TrustState
from tests.conftest import Registry

NOW = time.time()
DAY = 86400.0
YEAR = 365 * DAY
MIN_VALID = "2026-01-01T00:00:00Z"


def state(reg: Registry, folder: Path) -> TrustState:
    st = TrustState(folder, load_trusted_keys([reg.public_key], "test"), "test-site", MIN_VALID)
    st.load_state()  # the constructor reads nothing
    return st


def test_box_booted_in_1970_moves_forward_and_the_floor_stays_bounded(reg: Registry, tmp_path: Path) -> None:
    st = state(reg, tmp_path / "trust")
    reg.publish(b"a", version="1.0.0", now=NOW)
    index = st.verify(reg.index_bytes(), 0.0)  # clock in 1970: not trusted, judged at the floor
    st.accept(index, 0.0)
    assert st.highest_issued == parse_time(MIN_VALID, "") + DAY  # moved forward, by at most the skew
    reg.publish(b"b", version="2.0.0", now=NOW + 60)
    st.accept(st.verify(reg.index_bytes(), 0.0), 0.0)  # still moving, still bounded
    assert st.highest_issued == parse_time(MIN_VALID, "") + 2 * DAY
    again = state(reg, tmp_path / "trust")
    assert again.source() == {
        "kind": "index",
        "version": 2,
        "issued": json.loads(reg.index_bytes())["signed"]["issued"],
        "capped": True,
        "clock_trusted": False,
    }
    # NTP sets the clock: trusted again, and the next index raises the floor to its issue time.
    assert again.load(NOW + 120) is not None and again.clock(NOW + 120).trusted
    reg.publish(b"c", version="3.0.0", now=NOW + 120)
    idx = again.verify(reg.index_bytes(), NOW + 120)
    again.accept(idx, NOW + 120)
    assert again.highest_issued == idx.issued


def test_future_index_refused_with_its_reason_then_normal_ones_taken(reg: Registry, tmp_path: Path) -> None:
    st = state(reg, tmp_path / "trust")
    reg.publish(b"a", version="1.0.0", now=NOW)
    st.accept(st.verify(reg.index_bytes(), NOW), NOW)
    reg.publish(b"b", version="2.0.0", now=NOW + 10 * YEAR)
    with pytest.raises(
        FutureIssuedError, match=r"site index version 2: issued 20\d\d-.*ahead of the trusted local clock"
    ):
        st.verify(reg.index_bytes(), NOW)
    reg.publish(b"c", version="3.0.0", now=NOW + 60)
    st.accept(st.verify(reg.index_bytes(), NOW + 60), NOW + 60)
    assert st.trusted.highest_version == 3 and st.clock(NOW + 60).trusted


def test_poisoned_floor_needs_reset_floor_which_is_audited(reg: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "trust"
    atomic.write_json(folder / "state.json", {"highest_version": 0, "highest_issued": NOW + 10 * YEAR})
    st = state(reg, folder)
    reg.publish(b"a", version="1.0.0", now=NOW)
    with pytest.raises(ExpiredError):  # the old bug's symptom: a correct clock called wrong
        st.verify(reg.index_bytes(), NOW)
    assert st.source() == {"kind": "unknown"} and "reset-floor" in (st.advice(NOW) or "")
    record = st.reset_floor(NOW, who="ana", why="cloud clock bug")
    assert record is not None and record["who"] == "ana"
    assert st.reset_floor(NOW, who="ana", why="twice") is None  # nothing left to lower: no record
    lines = (folder / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["why"] for line in lines] == ["cloud clock bug"]
    again = state(reg, folder)
    assert again.source()["kind"] == "reset" and again.clock(NOW).trusted
    again.accept(again.verify(reg.index_bytes(), NOW), NOW)


@pytest.mark.parametrize(
    "damage",
    [
        b'{"highest_version": 3, "highest_iss',
        b"\x00\xff garbage",
        b'{"highest_issued": "next year"}',
        b"[1, 2]",
    ],
)
def test_damaged_state_is_moved_aside_and_the_floors_rebuilt_from_the_held_index(
    reg: Registry, tmp_path: Path, damage: bytes
) -> None:
    folder = tmp_path / "trust"
    st = state(reg, folder)
    reg.publish(b"a", version="1.0.0", now=NOW - 60)
    reg.publish(b"b", version="2.0.0", now=NOW - 30)
    index = st.verify(reg.index_bytes(), NOW)
    st.accept(index, NOW)
    (folder / "state.json").write_bytes(damage)
    again = state(reg, folder)  # starts, never raises
    assert len(again.recovered) == 1 and again.recovered[0]["file"] == str(folder / "state.json")
    (aside,) = folder.glob("state.json.corrupt-*")
    assert aside.read_bytes() == damage
    assert again.load(NOW) is not None
    assert again.highest_issued == index.issued and again.trusted.highest_version == 2
    assert again.source()["kind"] == "index" and again.source()["rebuilt"]
    assert json.loads((folder / "state.json").read_text())["highest_issued"] == index.issued


def test_rebuilt_floor_keeps_the_cap_and_without_an_index_is_min_valid_time(
    reg: Registry, tmp_path: Path
) -> None:
    folder = tmp_path / "trust"
    reg.publish(b"a", version="1.0.0", now=NOW + 10 * YEAR)  # held from before the skew rule
    atomic.write_bytes(folder / "index.json", reg.index_bytes())
    (folder / "state.json").write_text("{")
    again = state(reg, folder)
    assert again.load(NOW) is not None
    # The same cap as any accepted index: never past the local time plus trust.max_future_skew_s.
    assert again.highest_issued == pytest.approx(NOW + DAY) and again.source()["capped"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "state.json").write_text("garbage")
    fresh = state(reg, empty)
    assert fresh.load(NOW) is None and fresh.floor == parse_time(MIN_VALID, "")
    assert fresh.source() == {"kind": "min_valid_time"}

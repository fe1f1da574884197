"""The drift watch's state file: the site's past and the alarms survive a restart (the file is
written whole, atomically, after each window), and a damaged file is moved aside with the gateway
starting with no past, saying so."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from gateway.core.drift import DriftTracker
from gateway.core.drift_settings import DriftSettings
from gateway.core.drift_sketch import DriftSketch
from gateway.core.errors import FormatError
from gateway.core.metrics import Sample
from gateway.runtime.stats import Stats
from gateway.telemetry.drift import DriftWatch
from gateway.uplink.outbox import Outbox

S = DriftSettings(window_s=10.0, slot_s=10.0, day_s=40.0, past_days=1, min_count=100, alert_windows=2)


def _watch(tmp_path: Path, outbox: Outbox) -> DriftWatch:
    return DriftWatch(
        S,
        site="s",
        cohort_attribute="hw",
        outbox=outbox,
        stats=Stats(),
        deployments=list,
        state=tmp_path / "drift-state.json",
    )


def _sample(rng: random.Random, mean: float) -> Sample:
    sketch = DriftSketch().extend(rng.gauss(mean, 1.0) for _ in range(300))
    return Sample("cam-1", 0.0, "m", "1", 300, 0, None, None, None, drift={"x": sketch})


async def _windows(watch: DriftWatch, rng: random.Random, start: int, count: int, mean: float) -> None:
    for w in range(start, start + count):
        watch.take(_sample(rng, mean), {}, w * 10.0)
        await watch.close_due(w * 10.0 + 10.0)


async def test_a_restart_keeps_the_past_and_the_alarm(tmp_path: Path) -> None:
    rng = random.Random(3)
    outbox = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 24, max_age_s=1e9)
    try:
        first = _watch(tmp_path, outbox)
        await _windows(first, rng, 0, 4, 0.0)  # a "day" of stable windows: the past
        await _windows(first, rng, 4, 2, 2.0)  # shifted: alerted against the past
        assert [a.raised for a in first.alerts] == [True]
        again = _watch(tmp_path, outbox)  # a new process: only the file carries over
        await _windows(again, rng, 6, 1, 2.0)
        rec = again.tracker.latest[("m", "x")]
        assert rec.to_past is not None and rec.to_past > 0.1  # compared with the past at once
        assert rec.alerting and not again.alerts  # the alarm is still on: not raised a second time
        assert not again.recovered
    finally:
        outbox.close()


def _files(folder: Path) -> tuple[list[Path], dict[str, object]]:
    return list(folder.glob("drift-state.json.corrupt-*")), json.loads(
        (folder / "drift-state.json").read_bytes()
    )


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"version": 2}', b'{"version": 1, "past": [{"model_id": "m"}], "alarms": []}',
     b'{"version": 1, "past": [], "alarms": [{"model_id": "m", "feature": "x", "over": -1, "under": 0, "on": true}]}',
     b'{"version": 1, "past": [{"model_id": "m", "feature": "x", "slots": {"1": {"pos": {"1": -5}}}}], "alarms": []}'],
)  # fmt: skip
async def test_a_damaged_state_file_is_moved_aside_and_said(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "drift-state.json").write_bytes(content)
    outbox = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 24, max_age_s=1e9)
    try:
        watch = _watch(tmp_path, outbox)
        await _windows(watch, random.Random(1), 0, 1, 0.0)
        assert len(watch.recovered) == 1 and "no past" in watch.recovered[0]["action"]
        moved, now = await asyncio.to_thread(_files, tmp_path)
        assert moved and now["version"] == 1  # the damaged bytes kept aside, the state written anew
    finally:
        outbox.close()


def test_restore_takes_no_more_than_the_caps() -> None:
    big = DriftTracker(DriftSettings(max_features=50, past_days=14, min_count=1))
    one = DriftSketch().extend([1.0, 2.0])
    for i in range(50):
        for day in range(14):
            big.add("m", "", {f"f{i}": one}, day * 86400.0)
            big.close_due(day * 86400.0 + 600.0, {})
    small = DriftTracker(DriftSettings(max_features=4, past_days=2))
    small.restore(json.loads(json.dumps(big.to_json())))
    assert len(small.past) == 4 and all(len(slots) <= 2 * 24 for slots in small.past.values())
    with pytest.raises(FormatError):
        small.restore({"version": 1, "past": "x", "alarms": []})

"""The site's trace (``<data>/traces/``): each device's window turned back into one message gives the
gates the same figures; segments are gzip members on real files, bounded by size and age, and a cut
member (a crash mid-write) loses only itself; a write error is counted, never raised."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import pytest

from gateway.core.aggregate import Aggregator
from gateway.core.events import DeviceEvent
from gateway.core.gates.levels import observe
from gateway.core.metrics import parse_metrics
from gateway.core.window import WindowStats
from gateway.runtime.stats import Stats
from gateway.telemetry.trace_log import SEGMENT_S, TraceLog, read_hours

T0 = 1_800_000_000.0  # an hour boundary


def _message(rng: random.Random, version: str) -> dict[str, object]:
    n = rng.choice([0, 1, rng.randint(2, 500)])
    msg: dict[str, object] = {"model_id": "detector", "model_version": version, "num_inferences": n,
                              "num_errors": rng.randint(0, n)}  # fmt: skip
    for key, lo, hi in (("avg_latency_ms", 1, 400), ("cpu_percent", 0, 100), ("ram_percent", 0, 100),
                        ("temperature_c", 20, 90), ("mean_confidence", 0, 1), ("unknown_rate", 0, 1)):  # fmt: skip
        if rng.random() < 0.8:
            msg[key] = rng.uniform(lo, hi)
    if rng.random() < 0.7:
        msg["class_counts"] = {c: rng.randint(0, 50) for c in rng.sample(["person", "car", "dog"], 2)}
    return msg


def _windows(rng: random.Random, at: float, devices: int = 6, per_device: int = 4) -> list[WindowStats]:
    agg = Aggregator(60.0)
    for d in range(devices):
        for _ in range(per_device):
            version = "2.0.0" if d % 2 else "1.0.0"
            sample = parse_metrics(f"cam-{d}", _message(rng, version), at + rng.uniform(0, 59))
            agg.add(sample, {"hw": "rev2"})
    return agg.close_due(at + 60)


@pytest.mark.parametrize("seed", range(5))
def test_a_device_window_as_one_message_gives_the_gates_the_same_figures(seed: int) -> None:
    rng = random.Random(seed)
    for w in _windows(rng, T0):
        again = Aggregator(60.0)
        for device, dw in w.device_windows.items():
            msg = dw.as_message(w.key.model_id, w.key.model_version)
            again.add(parse_metrics(device, msg, w.start + 30), {"hw": "rev2"})
        (back,) = again.close_due(w.end)
        for device, dw in w.device_windows.items():
            want, got = observe(dw), observe(back.device_windows[device])
            assert want.keys() == got.keys()
            for metric, (obs, den) in want.items():
                if metric == "unknown":  # a ratio: one message weighs it by all the inferences
                    assert math.isclose(
                        obs / den, got[metric][0] / got[metric][1], rel_tol=1e-9, abs_tol=1e-12
                    )
                else:
                    assert math.isclose(obs, got[metric][0], rel_tol=1e-9, abs_tol=1e-9), metric
                    assert math.isclose(den, got[metric][1], rel_tol=1e-9), metric
        assert back.inferences == w.inferences and back.errors == w.errors


def _log(folder: Path, now: list[float], stats: Stats, **kw: float) -> TraceLog:
    kwargs = {"max_bytes": 1 << 30, "keep_s": 86400.0, **kw}
    return TraceLog(folder, max_bytes=int(kwargs["max_bytes"]), keep_s=kwargs["keep_s"], stats=stats,
                    clock=lambda: now[0])  # fmt: skip


async def test_records_come_back_in_time_order_and_a_cut_member_loses_only_itself(tmp_path: Path) -> None:
    rng, now, stats = random.Random(7), [T0 + 100], Stats()
    log = _log(tmp_path / "traces", now, stats)
    for k in range(3):  # three batches: three gzip members in one segment
        log.on_windows(_windows(rng, T0 + 60 * k))
        log.on_event(DeviceEvent("cam-1", "activated", "detector", "2.0.0", None))
        log.on_event(DeviceEvent("cam-1", "healthy", None, None, None))  # no version: the device's last one
        now[0] += 60
        await log.flush()
    (segment,) = (tmp_path / "traces").iterdir()
    hours = list(read_hours(tmp_path / "traces", 0))
    records = [r for h in hours for r in h]
    assert len(records) == 3 * (6 + 2) and stats["trace.records"] == 24
    assert [r["t"] for r in records] == sorted(r["t"] for r in records)
    events = [r for r in records if "event" in r]
    assert all(r["version"] == "2.0.0" and r["device"] == "cam-1" for r in events)
    assert all(
        set(r["metrics"]) >= {"num_inferences", "num_errors", "model_version"}
        for r in records
        if "metrics" in r
    )
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # the last batch's member cut short
    assert len([r for h in read_hours(tmp_path / "traces", 0) for r in h]) == 2 * 8
    later = _log(tmp_path / "traces", now, stats)  # a new run never appends after the cut member
    later.on_event(DeviceEvent("cam-2", "activated", "detector", "2.0.0", None))
    await later.flush()
    assert len([r for h in read_hours(tmp_path / "traces", 0) for r in h]) == 2 * 8 + 1
    (newest,) = [r for h in read_hours(tmp_path / "traces", now[0]) for r in h]
    assert newest["device"] == "cam-2"


async def test_the_oldest_hours_go_first_past_the_size_or_the_age(tmp_path: Path) -> None:
    rng, now, stats = random.Random(3), [T0], Stats()
    folder = tmp_path / "traces"
    log = _log(folder, now, stats, keep_s=5 * SEGMENT_S)
    for hour in range(8):
        now[0] = T0 + hour * SEGMENT_S + 600
        log.on_windows(_windows(rng, now[0] - 120))
        await log.flush()
    kept = sorted(p.name for p in folder.iterdir())  # hours 2 to 7: hour 2 ends within the 5 h kept
    assert len(kept) == 6 and all(h[0]["t"] >= T0 + 2 * SEGMENT_S for h in read_hours(folder, 0))
    one = max(p.stat().st_size for p in folder.iterdir())
    small = _log(folder, now, stats, max_bytes=2 * one + 1, keep_s=100 * SEGMENT_S)
    await small.flush()
    assert sorted(p.name for p in folder.iterdir()) == kept[-2:]
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 2 * one + 1


async def test_a_write_error_is_logged_once_and_counted_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "traces").write_text("a file where the folder should be")
    rng, now, stats = random.Random(1), [T0], Stats()
    log = _log(tmp_path / "traces", now, stats)
    with caplog.at_level(logging.WARNING, logger="gateway.telemetry.trace_log"):
        for _ in range(3):
            log.on_windows(_windows(rng, T0))
            await log.flush()
    assert stats["trace.write_errors"] == 3 and stats["trace.lost"] == 18
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
    (tmp_path / "traces").unlink()
    log.on_windows(_windows(rng, T0))
    await log.flush()
    assert stats["trace.records"] == 6


async def test_off_when_trace_max_bytes_is_0(tmp_path: Path) -> None:
    now, stats = [T0], Stats()
    log = _log(tmp_path / "traces", now, stats, max_bytes=0)
    log.on_windows(_windows(random.Random(0), T0))
    await log.run()  # returns at once
    await log.close()
    assert not (tmp_path / "traces").exists()

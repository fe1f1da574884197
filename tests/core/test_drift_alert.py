"""The drift statistic and its alert, on a simulated site (``tests/core/drift_sim.py``).

The stated behaviour (README, "Drift signals"), with the defaults (PSI >= 0.1 in 3 windows of
10 minutes in a row, against the same hour of the site's last days):
- no alert in a week of stable input (unlike devices, a very unlike camera in half the seeds, a day
  and night swing of one standard deviation, devices going quiet at random);
- when a third of the devices' input moves by 1.5 standard deviations at a random instant, every
  seed alerts, half of them within 45 minutes and each within two hours.
The defaults were picked on seeds 1 to 4 (``tests/bench/drift_alert.py``); these tests use others.
"""

from __future__ import annotations

import random
import statistics

import pytest

from gateway.core.drift import SITE, DriftTracker
from gateway.core.drift_psi import psi
from gateway.core.drift_settings import DriftSettings
from gateway.core.drift_sketch import DriftSketch
from tests.core.drift_sim import site, window_sketches

DAY = 86400.0


def _run(seed: int, days: float, *, shift: float, past_days: int) -> tuple[float, float | None, int]:
    """(largest site-wide PSI before the shift, minutes from the shift to the first alert, alerts
    raised before the shift)"""
    rng = random.Random(seed)
    devices = site(rng, 24, bad_camera=seed % 2 == 0)
    s = DriftSettings(past_days=past_days)
    tracker = DriftTracker(s)
    shift_at = (past_days + rng.random()) * DAY if shift else float("inf")
    moved = frozenset(d.device_id for d in rng.sample(devices, len(devices) // 3))
    largest, first, early = 0.0, None, 0
    t = 0.0
    while t < days * DAY and first is None:
        on = moved if t >= shift_at else frozenset()
        for d, sketches in window_sketches(rng, devices, t, amplitude=1.0, shifted=on, shift=shift):
            tracker.add("detector", d.cohort, sketches, t)
        t += s.window_s
        closed = tracker.close_due(t, {})
        for r in closed.records:
            if r.scope == SITE and r.to_past is not None and t <= shift_at:
                largest = max(largest, r.to_past)
        for a in closed.alerts:
            if a.raised and a.at <= shift_at:
                early += 1
            elif a.raised:
                first = (a.at - shift_at) / 60
    return largest, first, early


@pytest.mark.slow
def test_no_alert_in_a_stable_week() -> None:
    worst = []
    for seed in (21, 22, 23):  # a bad camera in 22
        largest, _, early = _run(seed, 8.0, shift=0.0, past_days=1)  # day 1 is the past, 7 judged
        assert early == 0, f"seed {seed}: {early} alerts on stable input"
        worst.append(largest)
    print(f"largest stable PSI per seed: {[round(w, 3) for w in worst]} (alert at 0.1)")


@pytest.mark.slow
def test_a_third_of_the_devices_shifting_alerts_within_two_hours() -> None:
    minutes = []
    for seed in range(100, 116):
        _, first, early = _run(seed, 3.0, shift=1.5, past_days=1)
        assert early == 0, f"seed {seed}: alerted before the shift"
        assert first is not None, f"seed {seed}: no alert within a day of the shift"
        minutes.append(first)
    print(
        f"alerted {len(minutes)}/16; minutes to alert: median {statistics.median(minutes):.0f}, "
        f"worst {max(minutes):.0f}"
    )
    assert statistics.median(minutes) <= 45 and max(minutes) <= 120


def _sketch(rng: random.Random, mean: float, n: int = 4000) -> DriftSketch:
    return DriftSketch().extend(rng.gauss(mean, 1.0) for _ in range(n))


@pytest.mark.parametrize("seed", range(3))
def test_psi_is_near_zero_for_alike_and_grows_with_the_shift(seed: int) -> None:
    rng = random.Random(seed)
    base = _sketch(rng, 0.0)
    assert psi(base, _sketch(rng, 0.0)) < 0.02
    distances = [psi(base, _sketch(rng, m)) for m in (0.25, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances)
    assert distances[-1] > 1.0
    assert psi(base, _sketch(rng, -1.0)) > 0.25  # negative values shift as well


def test_caps_bound_what_devices_can_make_us_keep() -> None:
    s = DriftSettings(max_features=4, max_cohorts=2, min_count=1)
    tracker = DriftTracker(s)
    one = DriftSketch().extend([1.0, 2.0])
    for i in range(50):
        tracker.add(f"m{i % 3}", f"hw:{i}", {f"f{i}": one, "g": one}, float(i))
    assert len(tracker.keys) == 4 and len(tracker.cohorts) == 2 and tracker.ignored > 0
    assert len(tracker.open) <= 4 * 3
    for day in range(10):  # the past keeps past_days days of slots, no more
        t = 100 + day * DAY
        tracker.add("m0", "", {"f0": one}, t)
        tracker.close_due(t + s.window_s, {})
    per_day = round(s.day_s / s.slot_s)
    assert all(len(slots) <= s.past_days * per_day + 1 for slots in tracker.past.values())


def test_reference_distance_and_alert_on_reference() -> None:
    rng = random.Random(5)
    s = DriftSettings(alert_on_reference=True, alert_windows=2)
    tracker = DriftTracker(s)
    ref = _sketch(rng, 0.0, 20000)
    alerts = []
    for w in range(4):
        t = w * s.window_s
        tracker.add("m", "", {"x": _sketch(rng, 1.5, 2000)}, t)
        closed = tracker.close_due(t + s.window_s, {("m", "x"): ref})
        assert closed.records[0].to_reference is not None and closed.records[0].to_reference > 0.5
        alerts += closed.alerts
    assert [a.raised for a in alerts] == [True] and alerts[0].against == "reference"


def test_each_cohort_gets_its_own_records_and_only_the_site_has_a_past() -> None:
    rng = random.Random(9)
    s = DriftSettings(min_count=100, window_s=600.0, slot_s=600.0, day_s=1200.0, past_days=1)
    tracker = DriftTracker(s)
    scopes: list[tuple[str, float | None]] = []
    for w in range(3):  # a "day" is two windows: the third window has the first as its past
        t = w * 600.0
        tracker.add("m", "hw:rev1", {"x": _sketch(rng, 0.0, 300)}, t)
        tracker.add("m", "hw:rev2", {"x": _sketch(rng, 2.0 if w == 2 else 0.0, 300)}, t + 1)
        closed = tracker.close_due(t + 600.0, {})
        scopes = [(r.scope, r.to_past) for r in closed.records]
    assert sorted(scope for scope, _ in scopes) == ["hw:rev1", "hw:rev2", SITE]
    past = dict(scopes)
    assert past["hw:rev1"] is None and past["hw:rev2"] is None
    assert past[SITE] is not None and past[SITE] > 0.1

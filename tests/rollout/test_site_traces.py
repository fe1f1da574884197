"""The site trace generator's own properties: what the gate's statistics are tried on must be a site
of unlike devices (STATS.md), and each story must be the effect it names, on the candidate only."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from gateway.core.metrics import parse_metrics
from gateway.core.settings import GateSettings
from gateway.rollout.replay import replay_trace
from tests.rollout.site_traces import (
    BASELINE,
    CANDIDATE,
    GONE_TO,
    RARE_CLASS,
    STORIES,
    day_factor,
    site_trace,
)

Trace = list[dict[str, Any]]


def _records(trace: Trace, version: str, since: float = 0.0) -> list[dict[str, Any]]:
    return [r for r in trace[1:] if r["version"] == version and r["t"] >= since]


def _by_device(records: Iterable[dict[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        out[r["device"]].append(r["metrics"])
    return out


def _rate(ms: Iterable[Mapping[str, Any]]) -> float:
    ms = list(ms)
    return sum(m["num_errors"] for m in ms) / sum(m["num_inferences"] for m in ms)


def test_deterministic_per_seed_and_well_formed() -> None:
    a = site_trace("errors_x3", 10, 7, report_s=120)
    assert a == site_trace("errors_x3", 10, 7, report_s=120)
    assert a != site_trace("errors_x3", 10, 8, report_s=120)
    head = a[0]
    assert head["replay"] == 1 and len(head["devices"]) == 10 and head["publish_s"] == 7200
    ts = [r["t"] for r in a[1:]]
    assert ts == sorted(ts) and max(ts) < 8 * 3600
    for r in a[1:]:
        s = parse_metrics(r["device"], r["metrics"], 0.0, model_id=head["model_id"])
        assert s.model_version == r["version"]
    # both versions for every device: the baseline over the whole trace, the candidate from the publish
    for version, since in ((BASELINE, 0.0), (CANDIDATE, 7200.0)):
        per = _by_device(_records(a, version))
        assert set(per) == {d["id"] for d in head["devices"]}
        assert min(r["t"] for r in _records(a, version)) >= since
        assert all(len(ms) >= (8 * 3600 - since) / 120 - 1 for ms in per.values())


def test_unlike_devices_traffic_and_errors() -> None:
    """Traffic spread about 4x between devices; error rates from a wide distribution around 1 %;
    counts overdispersed per report (more spread than a binomial at the device's own rate)."""
    for seed in range(4):
        trace = site_trace("good", 20, seed * 2, report_s=120)  # even seeds: no bad camera
        per = _by_device(_records(trace, BASELINE))
        traffic = sorted(statistics.fmean(m["num_inferences"] for m in ms) for ms in per.values())
        assert 2.2 < traffic[-1] / traffic[0] < 6.0, traffic
        rates = sorted(_rate(ms) for ms in per.values())
        assert 0.006 < statistics.median(rates) < 0.016, rates
        assert rates[-3] / rates[2] > 2.0, rates  # 85th over 15th percentile of devices
        assert _dispersion(trace) > 1.5
        zero = sum(m["num_errors"] == 0 for ms in per.values() for m in ms)
        assert zero > 0.05 * sum(map(len, per.values()))  # sparse counts: reports with no error


def _dispersion(trace: Trace) -> float:
    """The median over devices of the error counts' variance over a binomial's at the device's rate."""
    out = []
    for ms in _by_device(_records(trace, BASELINE)).values():
        p = _rate(ms)
        var = statistics.pvariance([m["num_errors"] for m in ms])
        out.append(var / statistics.fmean(m["num_inferences"] * p * (1 - p) for m in ms))
    return statistics.median(out)


def test_error_concentration_knob() -> None:
    """Calmer reports (a high concentration) spread their error counts far less than the default's
    bursts (traffic and the day/night swing spread both alike); a burst lasts a minute of device
    time whatever the report interval, so two-minute reports hold two of them and spread less."""
    calm = _dispersion(site_trace("good", 10, 4, report_s=60, error_concentration=1e6))
    bursty = _dispersion(site_trace("good", 10, 4, report_s=60))
    assert 2 * calm < bursty, (calm, bursty)
    two_minutes = _dispersion(site_trace("good", 10, 4, report_s=120, burst_s=120))
    assert _dispersion(site_trace("good", 10, 4, report_s=120)) < two_minutes


def test_bad_camera_in_half_the_seeds() -> None:
    seen = []
    for seed in range(30):
        trace = site_trace("good", 10, seed, report_s=240, hours=4, publish_s=3600)
        worst = max(_rate(ms) for ms in _by_device(_records(trace, BASELINE)).values())
        assert trace[0]["sim"]["bad_camera"] == (seed % 2 == 1)
        seen.append(worst > 0.055)  # 8x the site's 1 %, less the day/night swing and noise
        if seed % 2:
            assert worst > 0.055, seed
    assert 15 <= sum(seen) <= 19, seen  # the 15 bad cameras, and at most a few natural outliers


def test_day_night_moves_every_device_at_once() -> None:
    for seed in range(3):
        trace = site_trace("good", 20, seed * 2, report_s=120)
        head = trace[0]
        hours = range(8)
        swing = [day_factor(head, h * 3600 + 1800) for h in hours]
        assert min(swing) < 0 < max(swing) or abs(swing[0] - swing[-1]) > 0.5  # dusk or dawn inside
        sign = [day_factor(head, t * 60.0) > 0 for t in range(0, 8 * 60)]
        assert any(sign) and not all(sign)
        day, night = max(hours, key=lambda h: swing[h]), min(hours, key=lambda h: swing[h])
        per_hour: dict[int, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for r in _records(trace, BASELINE):
            per_hour[int(r["t"] // 3600)][r["device"]].append(r["metrics"])
        assert _total(per_hour[day], "num_inferences") > 1.25 * _total(per_hour[night], "num_inferences")
        assert _rate(_flat(per_hour[day])) < _rate(_flat(per_hour[night]))
        moved = sum(
            _total({d: ms}, "num_inferences") > _total({d: per_hour[night][d]}, "num_inferences")
            for d, ms in per_hour[day].items()
        )
        assert moved >= 16  # nearly every device at once, not one by one


def _flat(per: Mapping[str, list[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    return [m for ms in per.values() for m in ms]


def _total(per: Mapping[str, list[Mapping[str, Any]]], key: str) -> float:
    return sum(m[key] for m in _flat(per))


def _effect(story: str, seed: int) -> tuple[Trace, list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    trace = site_trace(story, 20, seed, report_s=120)
    base = [r["metrics"] for r in _records(trace, BASELINE, since=7200)]
    cand = [r["metrics"] for r in _records(trace, CANDIDATE)]
    return trace, base, cand


def _mean(ms: list[Mapping[str, Any]], key: str) -> float:
    return statistics.fmean(m[key] for m in ms)


def _share(ms: list[Mapping[str, Any]], name: str) -> float:
    return sum(m["class_counts"][name] for m in ms) / sum(sum(m["class_counts"].values()) for m in ms)


@pytest.mark.parametrize("story", sorted(STORIES))
def test_story_effect_on_the_candidate(story: str) -> None:
    _, base, cand = _effect(story, 11)
    errors = _rate(cand) - _rate(base), _rate(cand) / _rate(base)
    latency = _mean(cand, "avg_latency_ms") / _mean(base, "avg_latency_ms")
    confidence = _mean(cand, "mean_confidence") - _mean(base, "mean_confidence")
    cpu = _mean(cand, "cpu_percent") - _mean(base, "cpu_percent")
    rare = _share(cand, RARE_CLASS), _share(base, RARE_CLASS)
    assert 0.005 < rare[1] < 0.02  # the baseline's 1 % class
    expect = {
        "errors": (0.8, 1.25),
        "latency": (0.97, 1.03),
        "confidence": (-0.005, 0.005),
        "cpu": (-1.0, 1.0),
        "rare": (0.7, 1.4),
    }
    if story == "inside_margin":
        assert 0.0032 < errors[0] < 0.0048, errors
        expect.pop("errors")
    elif story == "errors_x3":
        expect["errors"] = (2.6, 3.4)
    elif story == "latency_x2.5":
        expect["latency"] = (2.45, 2.55)
    elif story == "confidence_-0.18":
        expect["confidence"] = (-0.185, -0.175)
    elif story == "cpu_+30":
        expect["cpu"] = (27.0, 30.5)  # capped at 100
    elif story == "class_gone":
        assert rare[0] == 0.0
        gained = _share(cand, GONE_TO) - _share(base, GONE_TO)
        assert abs(gained - rare[1]) < 0.01
        expect.pop("rare")
    got = {
        "errors": errors[1],
        "latency": latency,
        "confidence": confidence,
        "cpu": cpu,
        "rare": rare[0] / rare[1],
    }
    for key, (lo, hi) in expect.items():
        assert lo < got[key] < hi, (story, key, got[key])


def test_a_trace_replays() -> None:
    """The gate replay takes the trace as it is (its header's ``sim`` note included)."""
    r = replay_trace(site_trace("good", 10, 3, report_s=120), GateSettings(), name="good", seed=3)
    assert r.exposed >= 1 and r.published_at_s == 7200
    with pytest.raises(ValueError, match="unknown story"):
        site_trace("bad", 10, 0)

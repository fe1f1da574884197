"""Seeded replay traces of a small site of unlike devices, for the gate's statistics (issue 24).

:func:`site_trace` returns the lines of a ``gate replay`` trace (the header first, then the records
sorted by ``t``): every device reports on the baseline over the whole trace and on the candidate from
the candidate's publish on (what it would report on either version; the replay delivers a record only
while the device runs that version). The site is what makes a test look right on alike simulated
devices and fail on a real one (``shared/STATS.md``):

- traffic per device spread 4x (log-uniform inferences per report), overdispersed per report
  (gamma-Poisson);
- per-device error rates lognormal around 1 % (sigma 0.7), overdispersed in bursts (beta-binomial:
  each ``burst_s`` of a device's time, a minute by default, has a rate of its own, so most minutes of
  a quiet camera have no error at all); a burst lasts as long whatever the report interval, so a
  device reporting every 2 minutes sends two bursts' worth, not one doubled; in half the seeds (odd seeds, unless the
  ``bad_camera`` knob says) one camera with 8x the site's error rate;
- a day/night swing that moves every device and both versions at once: a 24 h sinusoid whose dusk or
  dawn falls inside the trace (from an hour before the publish to four hours after it), multiplying
  traffic (x 1 +/- 0.5) and error rates (x 1 -/+ 0.3, more errors at night) and moving latency, CPU
  and confidence a little;
- per-device levels and per-report noise for latency, CPU, RAM, temperature, unknown rate,
  confidence and class shares (``person``, ``forklift``, ``pallet`` and ``spill``, a 1 % class, drawn
  beta-binomial per report).

Stories: the candidate's effect against the baseline, applied per device on top of everything above
(:data:`STORIES`). Pure Python and :mod:`random` only, deterministic per seed (the bench and the null
simulation test both import it); what judges a trace is left to the replay and the bench.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from typing import Any

MODEL_ID = "detector"
BASELINE = "1.0.0"
CANDIDATE = "1.1.0"
START = 1_780_000_000  # the header's start: a fixed UNIX time (the swing's phase is per seed)
DAY_S = 86_400.0
CLASSES = (("person", 0.62), ("forklift", 0.25), ("pallet", 0.12), ("spill", 0.01))
RARE_CLASS = "spill"  # the 1 % class
GONE_TO = "person"  # where the rare class's detections go in the ``class_gone`` story

STORIES: dict[str, str] = {
    "good": "no change",
    "inside_margin": "errors +0.4 points (absolute), inside the +1 point margin",
    "errors_x3": "error rate x3",
    "latency_x2.5": "latency x2.5",
    "class_gone": "the 1 % class disappears (its detections go to another class)",
    "confidence_-0.18": "mean confidence 0.18 lower",
    "cpu_+30": "CPU +30 points (capped at 100)",
}
GOOD_STORIES = ("good", "inside_margin")


@dataclasses.dataclass(frozen=True)
class _Device:
    id: str
    offset_s: float  # when in each report period it reports
    traffic: float  # mean inferences per report at the swing's mean
    error_rate: float
    latency_ms: float
    cpu: float
    ram: float
    temp_c: float
    unknown: float
    confidence: float
    shares: tuple[tuple[str, float], ...]
    uptime_s: float


def site_trace(
    story: str,
    devices: int,
    seed: int,
    *,
    report_s: float = 60.0,
    publish_s: float = 7200.0,
    hours: float = 8.0,
    poll_interval_s: float = 60.0,
    bad_camera: bool | None = None,
    traffic: float = 300.0,
    error_rate: float = 0.01,
    error_concentration: float = 100.0,
    burst_s: float = 60.0,
    manifest: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The trace's lines: the header, then the records sorted by ``t`` (seconds from the start).

    ``traffic`` is the site's median inferences per minute of one device (log-uniform over 4x around
    it), ``error_rate`` the site's median error rate; ``bad_camera`` None: odd seeds have one.
    ``error_concentration`` is the beta concentration of a report's error rate around its device's
    (100: a report's rate varies about as much as its mean, bursts of errors; larger, calmer), over
    bursts of ``burst_s`` of device time (a report holds ``report_s / burst_s`` of them, at least one).
    """
    if story not in STORIES:
        raise ValueError(f"unknown story {story!r}: one of {', '.join(STORIES)}")
    if devices < 1 or report_s <= 0 or hours * 3600 <= publish_s:
        raise ValueError("need at least one device, report_s > 0 and a trace longer than publish_s")
    rng = random.Random(f"site/{seed}")
    bad = seed % 2 == 1 if bad_camera is None else bad_camera
    site = [_device(rng, i, report_s, traffic * report_s / 60.0, error_rate) for i in range(devices)]
    if bad:
        k = rng.randrange(devices)
        site[k] = dataclasses.replace(site[k], error_rate=8 * error_rate)
    crossing_s = rng.uniform(publish_s - 3600.0, publish_s + 4 * 3600.0)
    sign = rng.choice((1.0, -1.0))  # +1: dawn (night to day), -1: dusk
    header: dict[str, Any] = {
        "replay": 1,
        "model_id": MODEL_ID,
        "baseline": BASELINE,
        "candidate": CANDIDATE,
        "devices": [{"id": d.id, "attrs": {"hw": "rev2", "line": "AB"[i % 2]}} for i, d in enumerate(site)],
        "poll_interval_s": poll_interval_s,
        "start": START,
        "publish_s": publish_s,
        "manifest": dict(manifest or {}),
        # what made the trace, for tests and people (the replay reads none of it)
        "sim": {
            "story": story,
            "seed": seed,
            "bad_camera": bad,
            "day_crossing_s": crossing_s,
            "dawn": sign > 0,
        },
    }
    end_s, k = hours * 3600.0, (error_concentration, max(1, round(report_s / burst_s)))
    records: list[tuple[float, str, str, dict[str, Any]]] = []
    for d in site:
        t = d.offset_s
        while t < end_s:
            day = sign * math.sin(2 * math.pi * (t - crossing_s) / DAY_S)
            records.append((t, d.id, BASELINE, _metrics(rng, d, t, day, BASELINE, "good", k)))
            if t >= publish_s:
                records.append((t, d.id, CANDIDATE, _metrics(rng, d, t, day, CANDIDATE, story, k)))
            t += report_s
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    return [header] + [{"t": round(t, 3), "device": i, "version": v, "metrics": m} for t, i, v, m in records]


def day_factor(header: Mapping[str, Any], t: float) -> float:
    """The swing at ``t`` (+1 full day, -1 full night), from the header's ``sim`` note: for tests."""
    sim = header["sim"]
    return (1.0 if sim["dawn"] else -1.0) * math.sin(2 * math.pi * (t - sim["day_crossing_s"]) / DAY_S)


def _device(rng: random.Random, i: int, report_s: float, traffic: float, error_rate: float) -> _Device:
    raw = [(name, share * math.exp(rng.gauss(0.0, 0.25))) for name, share in CLASSES]
    total = sum(s for _, s in raw)
    return _Device(
        id=f"cam-{i:02d}",
        offset_s=rng.uniform(0.0, report_s),
        traffic=traffic * 2.0 ** rng.uniform(-1.0, 1.0),  # 4x from the quietest to the busiest
        error_rate=min(0.2, error_rate * math.exp(rng.gauss(0.0, 0.7))),
        latency_ms=40.0 * math.exp(rng.gauss(0.0, 0.3)),
        cpu=rng.uniform(20.0, 50.0),
        ram=rng.uniform(30.0, 60.0),
        temp_c=rng.uniform(45.0, 60.0),
        unknown=0.02 * math.exp(rng.gauss(0.0, 0.4)),
        confidence=min(0.95, max(0.5, rng.gauss(0.80, 0.04))),
        shares=tuple((name, s / total) for name, s in raw),
        uptime_s=rng.uniform(3600.0, 30 * DAY_S),
    )


def _metrics(
    rng: random.Random, d: _Device, t: float, day: float, version: str, story: str, errs: tuple[float, int]
) -> dict[str, Any]:
    """One report of ``d`` at ``t`` on ``version``, with ``story``'s effect on the candidate."""
    lam = d.traffic * (1.0 + 0.5 * day) * rng.gammavariate(4.0, 0.25)
    n = _poisson(rng, lam)
    p = min(0.5, d.error_rate * (1.0 - 0.3 * day))
    if story == "errors_x3":
        p = min(1.0, 3.0 * p)
    elif story == "inside_margin":
        p = min(1.0, p + 0.004)
    concentration, bursts = errs
    errors = sum(
        _binomial(rng, n * (i + 1) // bursts - n * i // bursts, _beta_mean(rng, p, concentration))
        for i in range(bursts)
    )
    latency = d.latency_ms * (1.0 + 0.1 * day) * math.exp(rng.gauss(0.0, 0.1))
    if story == "latency_x2.5":
        latency *= 2.5
    cpu = d.cpu + 8.0 * day + rng.gauss(0.0, 4.0)
    if story == "cpu_+30":
        cpu += 30.0
    confidence = d.confidence + 0.03 * day + rng.gauss(0.0, 0.02)
    if story == "confidence_-0.18":
        confidence -= 0.18
    counts = _classes(rng, n - errors, d.shares)
    if story == "class_gone":
        counts[GONE_TO] += counts.pop(RARE_CLASS)
        counts[RARE_CLASS] = 0
    return {
        "device_id": d.id,
        "timestamp": round(START + t, 3),
        "model_id": MODEL_ID,
        "model_version": version,
        "num_inferences": n,
        "num_errors": errors,
        "error_rate": round(errors / n, 6) if n else 0.0,
        "avg_latency_ms": round(latency, 2),
        "cpu_percent": round(min(100.0, max(0.0, cpu)), 2),
        "ram_percent": round(min(100.0, max(0.0, d.ram + rng.gauss(0.0, 2.0))), 2),
        "temperature_c": round(d.temp_c + 3.0 * day + rng.gauss(0.0, 0.5), 2),
        "uptime_seconds": round(d.uptime_s + t),
        "class_counts": counts,
        "mean_confidence": round(min(1.0, max(0.0, confidence)), 4),
        "unknown_rate": round(min(1.0, _beta_mean(rng, d.unknown, 200.0)), 5),
    }


def _classes(rng: random.Random, n: int, shares: tuple[tuple[str, float], ...]) -> dict[str, int]:
    """A multinomial split of ``n`` detections by sequential binomials; the rare class beta-binomial."""
    counts: dict[str, int] = {}
    left, mass = n, 1.0
    for name, share in reversed(shares):  # the rare class first, drawn with its own overdispersion
        if mass <= share or left == 0:
            counts[name] = left
            left = 0
            continue
        p = share / mass
        if name == RARE_CLASS:
            p = _beta_mean(rng, p, 200.0)
        k = _binomial(rng, left, p)
        counts[name] = k
        left -= k
        mass -= share
    return {name: counts[name] for name, _ in shares}


def _beta_mean(rng: random.Random, p: float, concentration: float) -> float:
    """A rate around ``p`` (beta with the given concentration): the per-report overdispersion."""
    if p <= 0.0 or p >= 1.0:
        return p
    return rng.betavariate(p * concentration, (1.0 - p) * concentration)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0.0:
        return 0
    if lam >= 30.0:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """Exact for small means (waiting times between successes), normal beyond."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - _binomial(rng, n, 1.0 - p)
    if n * p >= 20.0:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1.0 - p))))))
    log_q, k, pos = math.log1p(-p), 0, 0
    while True:
        pos += int(math.log(1.0 - rng.random()) / log_q) + 1
        if pos > n:
            return k
        k += 1


# -- the shadow stage (issue 26): added after the stories above, whose outputs stay as they were ----

SHADOW_STORIES: dict[str, str] = {
    "shadow_good": "the candidate disagrees with the active model on about 1 % of frames, at random",
    "shadow_swap_5": "it swaps person and forklift on 5 % of all frames (half each way: the same class "
    "shares, latency and CPU), besides the 1 % at random",
}
SWAPPED = ("person", "forklift")


def shadow_trace(story: str, devices: int, seed: int, **kw: Any) -> list[dict[str, Any]]:
    """:func:`site_trace` of the ``good`` story (what each device would report on either version),
    and from the publish on, beside each report on the baseline, the candidate's shadow report on
    the same frames: the baseline's figures, ``"shadow": true`` and the candidate's version, its class
    counts relabelled by ``story`` and their ``agreement``. Disagreement varies by device (lognormal,
    sigma 0.5) and by report (lognormal, sigma 0.4): frames are not independent trials."""
    if story not in SHADOW_STORIES:
        raise ValueError(f"unknown shadow story {story!r}: one of {', '.join(SHADOW_STORIES)}")
    lines = site_trace("good", devices, seed, **kw)
    header = {**lines[0], "sim": {**lines[0]["sim"], "story": story}}
    rng = random.Random(f"shadow/{seed}")
    miss = {d["id"]: 0.01 * math.exp(rng.gauss(0.0, 0.5) - 0.125) for d in header["devices"]}
    out: list[dict[str, Any]] = [header]
    for rec in lines[1:]:
        out.append(rec)
        if rec["version"] == BASELINE and rec["t"] >= header["publish_s"]:
            m = dict(rec["metrics"])
            counts, agreement = _relabel(rng, m["class_counts"], miss[rec["device"]], story)
            m.update(model_version=CANDIDATE, shadow=True, class_counts=counts, agreement=agreement)
            out.append({**rec, "version": CANDIDATE, "metrics": m})
    return out


def _relabel(
    rng: random.Random, active: Mapping[str, int], miss: float, story: str
) -> tuple[dict[str, int], dict[str, Any]]:
    """The candidate's labels of the frames the active model labelled ``active``, and the agreement."""
    total = sum(active.values())
    p_miss = min(0.5, miss * math.exp(rng.gauss(0.0, 0.4) - 0.08))
    moved: dict[tuple[str, str], int] = {}
    for a, n in active.items():
        left = n
        if story == "shadow_swap_5" and a in SWAPPED and n:
            b = SWAPPED[1] if a == SWAPPED[0] else SWAPPED[0]
            k = _binomial(rng, left, min(1.0, 0.025 * total / n))  # 2.5 % of all frames each way
            moved[(a, b)], left = k, left - k
        others = [c for c in active if c != a]
        for _ in range(_binomial(rng, left, p_miss)):
            key = (a, rng.choice(others))
            moved[key] = moved.get(key, 0) + 1
    counts = dict(active)
    classes: dict[str, list[int]] = {}
    for a, n in active.items():
        classes[a] = [n, n - sum(v for (x, _), v in moved.items() if x == a)]
    for (a, b), v in moved.items():
        counts[a] -= v
        counts[b] += v
    pairs = dict(sorted(((f"{a}->{b}", v) for (a, b), v in moved.items() if v), key=lambda kv: -kv[1])[:32])
    agreement = {"frames": total, "agree": total - sum(moved.values()), "classes": classes, "pairs": pairs}
    return counts, agreement

"""A Mann-Whitney judge per metric (Kayenta's method) over a site trace, for ``gate_power.py``.

At every window after the publish, the candidate devices' reports since the first switch are
compared with the reports of the devices still on the baseline over the same period, the baseline
shifted by the site's margin (errors + ``error_rate_rise_max``, latency x ``latency_ratio_max``, CPU
+ ``cpu_rise_max_percent``, confidence - ``confidence_drop_max``, each class's share x
``class_collapse_ratio`` for classes of at least ``class_floor``), one-sided; the candidate halts at
p < ``rate`` / metrics. Waves advance on the soak alone, as in the code before issue 24; a device
switches within one poll interval of its admission (a seeded draw). The unit is the report, as in
Kayenta: every report of every device is one value. ``scipy`` and ``numpy`` are for the bench only.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from gateway.core.settings import GateSettings
from gateway.core.waves import wave_target
from tests.rollout.site_traces import BASELINE, CANDIDATE, CLASSES

WINDOW_S = 60.0


def _values(m: Mapping[str, Any]) -> dict[str, float]:
    n = m["num_inferences"]
    total = sum(m["class_counts"].values())
    out = {
        "errors": m["num_errors"] / n if n else 0.0,
        "latency": m["avg_latency_ms"],
        "cpu": m["cpu_percent"],
        "confidence": m["mean_confidence"],
    }
    for name, _ in CLASSES:
        out[f"class:{name}"] = m["class_counts"].get(name, 0) / total if total else 0.0
    return out


@dataclass(frozen=True)
class Plan:
    """The waves, soak and margins of the code before issue 24 (its defaults): the judge keeps them
    whatever the settings of the checkout it runs in have become; the margins are the site's."""

    waves: tuple[float, ...] = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0)
    min_devices_per_wave: int = 1
    soak_s: float = 900.0
    error_rate_rise_max: float = 0.01
    latency_ratio_max: float = 2.0
    cpu_rise_max_percent: float = 20.0
    confidence_drop_max: float = 0.10
    class_floor: float = 0.005
    class_collapse_ratio: float = 0.2

    @classmethod
    def margins_of(cls, s: GateSettings) -> Plan:
        """The site's margins from ``s`` (named alike before and after issue 24); the rest as before."""
        names = ("error_rate_rise_max", "latency_ratio_max", "cpu_rise_max_percent", "confidence_drop_max")
        names += ("class_floor", "class_collapse_ratio")
        return cls(**{k: getattr(s, k) for k in names if hasattr(s, k)})

    def first_wave(self, devices: int) -> int:
        return wave_target(self.waves, 0, devices, self.min_devices_per_wave)


def _margins(s: Plan) -> dict[str, tuple[str, float, str]]:
    """metric -> (how the baseline is shifted, by how much, the side that is worse)."""
    out = {
        "errors": ("add", s.error_rate_rise_max, "greater"),
        "latency": ("mul", s.latency_ratio_max, "greater"),
        "cpu": ("add", s.cpu_rise_max_percent, "greater"),
        "confidence": ("add", -s.confidence_drop_max, "less"),
    }
    for name, share in CLASSES:
        if share >= s.class_floor:
            out[f"class:{name}"] = ("mul", s.class_collapse_ratio, "less")
    return out


def _worse(cand: list[float], base: list[float], how: str, by: float, side: str, alpha: float) -> bool:
    if len(cand) < 2 or len(base) < 2:
        return False
    b = np.asarray(base)
    b = b + by if how == "add" else b * by
    c = np.asarray(cand)
    if np.ptp(c) == 0 and np.ptp(b) == 0 and c[0] == b[0]:
        return False
    return bool(mannwhitneyu(c, b, alternative=side, method="asymptotic").pvalue < alpha)


def mann_whitney(
    trace: Sequence[Mapping[str, Any]], s: Plan, seed: int, rate: float = 0.05
) -> dict[str, Any]:
    """Kayenta's judge over the trace, at the same margins and soak as the code before."""
    head = trace[0]
    ids = [d["id"] for d in head["devices"]]
    rng = random.Random(f"mw/{seed}")
    order = rng.sample(ids, len(ids))
    poll, pub = float(head["poll_interval_s"]), float(head["publish_s"])
    margins = _margins(s)
    alpha = rate / len(margins)
    switch: dict[str, float] = {}  # device -> when it runs the candidate
    cand: dict[str, list[float]] = defaultdict(list)
    base: dict[str, list[float]] = defaultdict(list)
    wave, opened = -1, pub
    result: dict[str, Any] = {
        "outcome": "undecided",
        "halted_at_s": None,
        "exposed": 0,
        "full_at_s": None,
        "published_at_s": pub,
        "first_wave": s.first_wave(len(ids)),
    }

    def open_wave(k: int, at: float) -> None:
        for d in order[: wave_target(s.waves, k, len(ids), s.min_devices_per_wave)]:
            switch.setdefault(d, at + rng.uniform(0.0, poll))

    records = iter(trace[1:])
    pending = next(records, None)
    look = pub
    while look <= pub + 24 * 3600 and pending is not None:
        if wave + 1 < len(s.waves) and (wave < 0 or look - opened >= s.soak_s):
            wave, opened = wave + 1, look
            open_wave(wave, look)
            if wave == len(s.waves) - 1 or len(switch) == len(ids):
                result.update(outcome="done", full_at_s=look)
                break
        look += WINDOW_S
        first = min(switch.values())
        while pending is not None and pending["t"] <= look:
            t, d = pending["t"], pending["device"]
            on = CANDIDATE if switch.get(d, math.inf) <= t else BASELINE
            if pending["version"] == on and t >= first:
                into = cand if on == CANDIDATE else base
                for k, v in _values(pending["metrics"]).items():
                    into[k].append(v)
            pending = next(records, None)
        if any(_worse(cand[k], base[k], *margins[k], alpha) for k in margins):
            result.update(outcome="halted", halted_at_s=look)
            break
    halt = result["halted_at_s"]
    result["exposed"] = len(switch) if halt is None else sum(1 for at in switch.values() if at <= halt)
    return result

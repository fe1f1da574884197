"""Made-up inference figures, for the demo and for trying an agent without a model runtime.

A real device's inference app counts its inferences, errors and latency and reads its CPU, RAM and
temperature; here a :class:`Profile` per model version stands in for that, with some noise, so a
candidate can look healthy or bad to the gateway's gates. Nothing here runs a model.

It also reports drift sketches (:mod:`gateway.core.drift_sketch`, the wire format the gateway
parses) of two simulated per-frame features: ``brightness`` (0 to 255) and ``pc1`` (an embedding's
first principal component, centred). ``drift_shift`` (in standard deviations of a frame) moves
both from ``drift_shift_at`` seconds after the start: the knob a system test turns to drive drift.

In the shadow stage (:meth:`SimulatedInference.shadow`) both models label the same frames: the
active model draws each frame's class from :data:`CLASSES`; the candidate gives the same label but
on ``disagree`` of the frames (another class at random) and, with ``swap = (a, b, share)``, swaps the
two classes on ``share`` of all frames (half each way, so its class shares, latency and CPU stay
those of the active model: only the agreement on the same frames shows it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.agent.slots import SlotInfo
from gateway.core.agreement import MAX_PAIRS
from gateway.core.drift_sketch import DriftSketch

CLASSES = {"person": 0.55, "forklift": 0.3, "pallet": 0.15}
DRIFT_FRAMES = 200  # frames sketched per report at most


@dataclass(frozen=True)
class Profile:
    """How a model behaves on this hardware, on average."""

    cpu_percent: float = 30.0
    latency_ms: float = 40.0
    error_rate: float = 0.002
    ram_percent: float = 40.0
    temperature_c: float = 52.0
    inferences_per_s: float = 20.0
    mean_confidence: float = 0.88
    disagree: float = 0.0  # share of frames the candidate labels as another class at random
    swap: tuple[str, str, float] | None = None  # (a, b, share of all frames swapped, half each way)


HEALTHY = Profile()
BURNS_CPU = Profile(cpu_percent=72.0, latency_ms=95.0, error_rate=0.004, ram_percent=48.0, temperature_c=63.0)


class SimulatedInference:
    """A :data:`gateway.agent.agent.MetricsSource`: figures for whatever version the device runs,
    from ``profiles`` by version (``default`` for the others)."""

    def __init__(
        self,
        profiles: Mapping[str, Profile],
        *,
        interval_s: float,
        rng: random.Random,
        default: Profile = HEALTHY,
        drift_shift: float = 0.0,
        drift_shift_at: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profiles = dict(profiles)
        self.drift_shift = drift_shift
        self.clock = clock
        self.shift_from = clock() + drift_shift_at
        self.interval_s = interval_s
        self.rng = rng
        self.default = default
        self.started = 0.0

    def __call__(self, slot: SlotInfo) -> dict[str, Any]:
        p = self.profiles.get(slot.version, self.default)
        r = self.rng
        n = max(1, round(p.inferences_per_s * self.interval_s * r.uniform(0.8, 1.2)))
        errors = sum(r.random() < p.error_rate for _ in range(n))
        labels = r.choices(list(CLASSES), weights=list(CLASSES.values()), k=n - errors)
        self.started += self.interval_s
        return self._figures(p, n, errors, labels)

    def shadow(self, active: SlotInfo, candidate: SlotInfo) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both models on the same frames: the active model's figures, and the candidate's with
        its ``agreement`` (a :data:`gateway.agent.shadow.ShadowSource`)."""
        pa = self.profiles.get(active.version, self.default)
        pc = self.profiles.get(candidate.version, self.default)
        r = self.rng
        n = max(1, round(pa.inferences_per_s * self.interval_s * r.uniform(0.8, 1.2)))
        ok_a = [r.random() >= pa.error_rate for _ in range(n)]
        ok_c = [r.random() >= pc.error_rate for _ in range(n)]
        frames = r.choices(list(CLASSES), weights=list(CLASSES.values()), k=n)
        cand = [_candidate_label(x, pc, r) for x in frames]
        self.started += self.interval_s
        active_doc = self._figures(
            pa, n, ok_a.count(False), [x for x, ok in zip(frames, ok_a, strict=True) if ok]
        )
        cand_doc = self._figures(
            pc, n, ok_c.count(False), [x for x, ok in zip(cand, ok_c, strict=True) if ok]
        )
        both = [(a, c) for a, c, x, y in zip(frames, cand, ok_a, ok_c, strict=True) if x and y]
        classes: dict[str, list[int]] = {}
        pairs: dict[str, int] = {}
        for a, c in both:
            mine = classes.setdefault(a, [0, 0])
            mine[0] += 1
            if a == c:
                mine[1] += 1
            else:
                pairs[f"{a}->{c}"] = pairs.get(f"{a}->{c}", 0) + 1
        cand_doc["agreement"] = {
            "frames": len(both),
            "agree": sum(k for _, k in classes.values()),
            "classes": classes,
            "pairs": dict(sorted(pairs.items(), key=lambda kv: -kv[1])[:MAX_PAIRS]),
            "conf_diff_mean": round(cand_doc["mean_confidence"] - active_doc["mean_confidence"], 4),
        }
        return active_doc, cand_doc

    def _figures(self, p: Profile, n: int, errors: int, labels: list[str]) -> dict[str, Any]:
        r = self.rng
        counts: dict[str, int] = {}
        for name in labels:
            counts[name] = counts.get(name, 0) + 1
        return {
            "num_inferences": n,
            "num_errors": errors,
            "error_rate": errors / n,
            "avg_latency_ms": round(max(1.0, r.gauss(p.latency_ms, p.latency_ms * 0.08)), 2),
            "cpu_percent": round(min(100.0, max(0.0, r.gauss(p.cpu_percent, 3.0))), 1),
            "ram_percent": round(min(100.0, max(0.0, r.gauss(p.ram_percent, 2.0))), 1),
            "temperature_c": round(r.gauss(p.temperature_c, 1.0), 1),
            "uptime_seconds": round(self.started),
            "class_counts": counts,
            "mean_confidence": round(min(1.0, max(0.0, r.gauss(p.mean_confidence, 0.02))), 3),
            "drift": self.drift(min(n, DRIFT_FRAMES)),
        }

    def drift(self, frames: int) -> dict[str, Any]:
        shift = self.drift_shift if self.clock() >= self.shift_from else 0.0
        bright, pc1 = DriftSketch(), DriftSketch()
        for _ in range(frames):
            z = self.rng.gauss(shift, 1.0)
            bright.add(min(255.0, max(0.0, 120.0 + 25.0 * z)))
            pc1.add(z)
        return {"brightness": bright.to_json(), "pc1": pc1.to_json()}


def _candidate_label(label: str, p: Profile, r: random.Random) -> str:
    """The candidate's top-1 label for a frame the active model labelled ``label``."""
    if p.swap is not None:
        a, b, share = p.swap
        if label in (a, b) and r.random() < share / 2 / CLASSES[label]:
            return b if label == a else a
    if p.disagree and r.random() < p.disagree:
        return r.choice([c for c in CLASSES if c != label])
    return label

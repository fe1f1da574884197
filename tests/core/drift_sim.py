"""A simulated site's drift sketches, window by window: unlike devices (own level, spread and
traffic), one very unlike camera in some seeds, a day and night swing that moves every device at
once, devices going quiet at random, and optionally a third of the devices whose input moves at
an instant. Two features: ``brightness`` (positive, 0 to 255) and ``pc1`` (centred: negative half
the time). Shared by the drift simulation tests and ``tests/bench/drift_alert.py``."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.core.drift_sketch import DriftSketch


@dataclass(frozen=True)
class Device:
    device_id: str
    cohort: str
    level: float  # its own mean, in standard deviations of a frame
    spread: float
    values_per_window: int
    quiet: float  # the chance it sends nothing in a window


def site(rng: random.Random, devices: int, *, bad_camera: bool) -> list[Device]:
    out = [
        Device(
            f"cam-{i:03d}",
            f"hw:rev{i % 3}",
            rng.gauss(0, 0.5),
            rng.uniform(0.7, 1.3),
            rng.randint(25, 100),  # traffic differs 4x
            rng.uniform(0.0, 0.1),
        )
        for i in range(devices)
    ]
    if bad_camera:
        d = out[0]
        out[0] = Device(d.device_id, d.cohort, 3.0, 2.0, d.values_per_window, d.quiet)
    return out


def swing(t: float, amplitude: float) -> float:
    """Every device's input at time t moves with the day (light), in standard deviations."""
    return amplitude * math.sin(2 * math.pi * t / 86400.0)


def window_sketches(
    rng: random.Random,
    devices: list[Device],
    t: float,
    *,
    amplitude: float,
    shifted: frozenset[str] = frozenset(),
    shift: float = 0.0,
) -> Iterator[tuple[Device, dict[str, DriftSketch]]]:
    """Each device's sketches for the window at ``t`` (the ones that are not quiet)."""
    day = swing(t, amplitude)
    for d in devices:
        if rng.random() < d.quiet:
            continue
        mean = d.level + day + (shift if d.device_id in shifted else 0.0)
        bright, pc1 = DriftSketch(), DriftSketch()
        for _ in range(d.values_per_window):
            z = rng.gauss(mean, d.spread)
            bright.add(min(255.0, max(0.0, 120.0 + 25.0 * z)))
            pc1.add(z + rng.gauss(0, 0.5))
        yield d, {"brightness": bright, "pc1": pc1}

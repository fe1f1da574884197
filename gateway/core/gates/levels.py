"""Each device's own level on a version: what a device is compared with after it switches.

A site's devices differ far more than noise: one camera has eight times the errors of another, four
times the traffic. So a gate never compares a pool of candidate devices with a pool of baseline
devices; it compares each device on the candidate with *its own* level on the baseline
(:mod:`gateway.core.gates.paired`). This module keeps those levels: per model version, device and
metric, the decayed sums of the device's windows (half-life ``gates.reference_half_life_s``), from
which a level and the uncertainty of that level follow.

A metric of a window is an observation and its weight (``obs``, ``den``): errors and inferences,
a class's count and the detections, the mean log latency and 1, ... so that every level and every
comparison is a ratio of sums (a rate, a share, a mean), with its variance from the same sums.

Pure: windows and ``now`` in, new values out; stored as plain lists (the gate files).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from gateway.core.window import DeviceWindow, WindowStats

# one level: decayed sums (den, obs, obs^2, obs*den, den^2, windows) and the time of the last window
Level = tuple[float, ...]
Levels = Mapping[str, Mapping[str, Level]]  # device -> metric -> level
MIN_WINDOWS = 3.0  # a level from fewer (decayed) windows is not used
MAX_CLASSES = 32  # classes a device's level keeps (the commonest); the rest are not compared


def observe(dw: DeviceWindow) -> dict[str, tuple[float, float]]:
    """Every metric of one device's window as (obs, den); a metric it did not report is absent."""
    out: dict[str, tuple[float, float]] = {}
    if dw.inferences > 0:
        out["errors"] = (float(dw.errors), float(dw.inferences))
    if dw.lat_w:
        out["latency"] = (dw.lat_sum / dw.lat_w, 1.0)
    if dw.cpu_n:
        out["cpu"] = (dw.cpu_sum / dw.cpu_n, 1.0)
    if dw.ram_n:
        out["ram"] = (dw.ram_sum / dw.ram_n, 1.0)
    if dw.temp_n:
        out["temp"] = (dw.temp_sum / dw.temp_n, 1.0)
    if dw.conf_w:
        out["confidence"] = (dw.conf_sum / dw.conf_w, 1.0)
    if dw.unknown_w:
        out["unknown"] = (dw.unknown_sum, float(dw.unknown_w))
    total = sum(dw.classes.values())
    if total > 0:
        for name, k in dw.classes.items():
            out["class:" + name] = (float(k), float(total))
    return out


def value(level: Level) -> float | None:
    """The level (a ratio of sums), or None from too few windows."""
    d, o = level[0], level[1]
    return o / d if d > 0 and level[5] >= MIN_WINDOWS else None


def pooled(levels: Levels, devices: Iterable[str], metric: str) -> float | None:
    """The devices' levels of ``metric`` pooled (a ratio of their sums: errors over inferences, so
    the busier device counts for more, as in the gate's estimate); None when none has a level."""
    d = o = 0.0
    for dev in devices:
        level = levels.get(dev, {}).get(metric)
        if level is not None and value(level) is not None:
            d, o = d + level[0], o + level[1]
    return o / d if d > 0 else None


def variance(level: Level) -> float:
    """The variance of :func:`value` as an estimate (the sandwich over the device's windows)."""
    d, o, oo, od, dd, n = level[:6]
    if d <= 0 or n < 2:
        return math.inf
    v = o / d
    resid = max(0.0, oo - 2 * v * od + v * v * dd)
    return resid / (d * d) * n / (n - 1)


def _add(level: Level | None, obs: float, den: float, t: float, half_life_s: float) -> Level:
    if level is None:
        return (den, obs, obs * obs, obs * den, den * den, 1.0, t)
    f = 0.5 ** (max(0.0, t - level[6]) / half_life_s) if half_life_s > 0 else 1.0
    d, o, oo, od, dd, n = (x * f for x in level[:6])
    return (d + den, o + obs, oo + obs * obs, od + obs * den, dd + den * den, n + 1.0, t)


def update(
    levels: Mapping[str, Levels],
    windows: Iterable[WindowStats],
    *,
    versions: frozenset[str],
    half_life_s: float,
) -> Mapping[str, Levels]:
    """Add the windows of ``versions`` (``model@version`` keys) to their devices' levels (a new value;
    ``levels`` does not change). Shadow windows are a candidate's and are never a level."""
    out: dict[str, dict[str, dict[str, Level]]] = {}
    for w in windows:
        key = f"{w.key.model_id}@{w.key.model_version}"
        if w.key.shadow or key not in versions or not w.device_windows:
            continue
        mine = out.get(key)
        if mine is None:
            mine = out[key] = dict(levels.get(key, {}))  # type: ignore[arg-type]
        for device, dw in w.device_windows.items():
            old = mine.get(device, {})
            new = dict(old)
            for metric, (obs, den) in observe(dw).items():
                if metric.startswith("class:") and metric not in old and _classes(new) >= MAX_CLASSES:
                    continue
                new[metric] = _add(old.get(metric), obs, den, w.end, half_life_s)
            mine[device] = new
    if not out:
        return levels
    return {**levels, **out}


def _classes(metrics: Mapping[str, Level]) -> int:
    return sum(1 for m in metrics if m.startswith("class:"))


def prune(levels: Mapping[str, Levels], keep: Iterable[str]) -> Mapping[str, Levels]:
    """Only the levels of the versions in ``keep`` (the site's known deployments)."""
    wanted = set(keep)
    if set(levels) <= wanted:
        return levels
    return {k: v for k, v in levels.items() if k in wanted}

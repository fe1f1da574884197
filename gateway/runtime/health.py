"""The gateway's own health (psutil): CPU, RAM, disk free on the data folder, temperature; the connections the caller counted.

Thin and forgiving: a sensor the board does not have, or cannot read just now (out of file
descriptors: psutil reads ``/proc``), is ``None``, never an exception.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil


def _temperature_c() -> float | None:
    try:
        temps = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        temps = {}
    readings = [t.current for entries in temps.values() for t in entries if t.current is not None]
    if readings:
        return float(max(readings))
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000.0
    except (OSError, ValueError):
        return None


def probe(
    data_dir: Path, process: psutil.Process | None = None, *, connections: int | None = None
) -> dict[str, Any]:
    """``connections`` is the caller's count of its own (its listeners count them): asking psutil
    for them reads the box's whole TCP table, 6 % of the gateway's CPU at 20,000 connections."""
    out: dict[str, Any] = {"connections": connections}
    try:
        proc = process or psutil.Process(os.getpid())
        with proc.oneshot():
            out["process_cpu_percent"] = proc.cpu_percent(None)
            out["process_rss_bytes"] = proc.memory_info().rss
            out["open_files"] = proc.num_fds() if hasattr(proc, "num_fds") else None
    except (psutil.Error, OSError):
        pass
    try:
        out["system_cpu_percent"] = psutil.cpu_percent(None)
    except OSError:
        out["system_cpu_percent"] = None
    try:
        vm = psutil.virtual_memory()
        out["ram_percent"], out["ram_available_bytes"] = vm.percent, vm.available
    except OSError:
        out["ram_percent"] = out["ram_available_bytes"] = None
    try:
        du = psutil.disk_usage(str(data_dir))
        out["disk_free_bytes"], out["disk_percent"] = du.free, du.percent
    except OSError:
        out["disk_free_bytes"] = out["disk_percent"] = None
    out["temperature_c"] = _temperature_c()
    try:
        out["load_average"] = list(os.getloadavg())
    except OSError:
        out["load_average"] = None
    return out

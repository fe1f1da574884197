"""Wave admission, as pure logic: which of the cloud-eligible devices at this site are let in.

Eligible devices are ranked once per deployment: by the position of their ``order`` attribute's
value (when the installer names one, e.g. ``hw`` or ``line``: one hardware revision or one line
first, values in sorted order, devices without the attribute last), then by a hash of
(deployment, device id), which is stable across restarts and gateways. Wave ``k`` admits devices
in rank order until ``max(ceil(percent_k * N / 100), min_devices * (k + 1))`` are in, capped at N.
Admission is sticky: an admitted device stays admitted, and a device that joins later takes its
rank among those not yet admitted, so nobody moves to a later wave.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence


def rank_key(
    deployment_key: str, device_id: str, attrs: Mapping[str, str], order_attr: str
) -> tuple[int, str, str]:
    h = hashlib.sha256(f"wave/{deployment_key}/{device_id}".encode()).hexdigest()
    if not order_attr:
        return (0, "", h)
    value = attrs.get(order_attr)
    return (0, value, h) if value is not None else (1, "", h)


def wave_target(plan: Sequence[float], wave: int, eligible: int, min_devices: int) -> int:
    """How many devices are admitted once ``wave`` (0-based) is open."""
    pct = plan[min(wave, len(plan) - 1)]
    return min(eligible, max(math.ceil(pct * eligible / 100.0), min_devices * (wave + 1)))


def admit(
    deployment_key: str,
    eligible: Mapping[str, Mapping[str, str]],
    admitted: Iterable[str],
    plan: Sequence[float],
    wave: int,
    *,
    min_devices: int,
    order_attr: str,
) -> dict[str, int]:
    """Newly admitted devices -> the wave that admitted them (those already admitted keep theirs)."""
    already = set(admitted)
    target = wave_target(plan, wave, len(eligible), min_devices)
    need = target - len(already & set(eligible))
    if need <= 0:
        return {}
    ranked = sorted(
        (d for d in eligible if d not in already),
        key=lambda d: rank_key(deployment_key, d, eligible[d], order_attr),
    )
    return {d: wave for d in ranked[:need]}

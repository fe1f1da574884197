"""Wave admission, as pure logic: which of the cloud-eligible devices at this site are let in.

Eligible devices are ranked once per deployment: by the position of their ``order`` attribute's
value (when the installer names one, e.g. ``hw`` or ``line``: one hardware revision or one line
first, values in sorted order, devices without the attribute last), then by a hash of
(deployment, device id), which is stable across restarts and gateways. Wave ``k`` admits devices
in rank order until ``max(ceil(percent_k * N / 100), min_devices * (k + 1))`` are in, capped at N.
Admission is sticky: an admitted device stays admitted, and a device that joins later takes its
rank among those not yet admitted, so nobody moves to a later wave.

The first wave may grow by the evidence it can give (:func:`first_wave`): past its count, in the
same rank order, while what its devices can show is not enough (the gate's rule: their errors on the
baseline, :func:`gateway.core.gates.levels.pooled`), to at most twice its count
(:func:`first_wave_most`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence


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


def first_wave_most(plan: Sequence[float], eligible: int, min_devices: int) -> int:
    """The most devices a first wave grown by its evidence admits: twice its count, capped at N."""
    return min(eligible, 2 * wave_target(plan, 0, eligible, min_devices))


def _ranked(
    deployment_key: str, eligible: Mapping[str, Mapping[str, str]], already: set[str], order_attr: str
) -> list[str]:
    return sorted(
        (d for d in eligible if d not in already),
        key=lambda d: rank_key(deployment_key, d, eligible[d], order_attr),
    )


def first_wave(
    deployment_key: str,
    eligible: Mapping[str, Mapping[str, str]],
    admitted: Iterable[str],
    plan: Sequence[float],
    *,
    min_devices: int,
    order_attr: str,
    enough: Callable[[Sequence[str]], bool],
) -> dict[str, int]:
    """Wave 0's newly admitted devices: its count, then one more in rank order while ``enough`` of
    the wave's devices is False, up to :func:`first_wave_most`."""
    fresh = admit(deployment_key, eligible, admitted, plan, 0, min_devices=min_devices, order_attr=order_attr)
    wave = [*(d for d in admitted if d in eligible), *fresh]
    most = first_wave_most(plan, len(eligible), min_devices)
    more = iter(_ranked(deployment_key, eligible, set(wave), order_attr))
    while len(wave) < most and not enough(wave):
        nxt = next(more, None)
        if nxt is None:
            break
        wave.append(nxt)
        fresh[nxt] = 0
    return fresh


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
    return {d: wave for d in _ranked(deployment_key, eligible, already, order_attr)[:need]}

"""Each device's last eligibility decision, kept until one of the values it was read from changes.

A wave with room is filled by a pass over the whole site (:func:`gateway.core.reach.eligible_for`),
and while it waits for devices with a level of their own it is filled again after each change of
the site: at 20,000 devices a pass of :func:`gateway.core.eligibility.decide` took 230 ms of the
event loop, about once a second (``tests/bench/site_20k.py`` under py-spy: a third of the gateway's
loop, and the tail of its poll and ingest latency). Between two passes almost no device's facts
change, so :class:`EligibilityMemo` gives the last decision again when every value ``decide`` reads
is the same as when it was made:

* the deployments in effect, as the same objects in the same order (an index that comes into
  effect is new objects: every decision is made again);
* the device's ``attrs`` (equal; usually the same mapping object), ``model_id`` and
  ``model_version``, and its id (the memo's key: the rollout bucket and cohorts read it);
* where ``now`` lies between the deployments' window edges
  (:func:`~gateway.core.eligibility.window_edges`), as in :mod:`gateway.core.poll_memo`;
* the compatibility matrix, as the same object.

A cache, not state: what it returns is what ``decide`` would return now
(``tests/core/test_eligibility_memo.py`` checks that over random sites, index changes and clocks).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from firmware_compat.matrix import CompatMatrix
from gateway.core.device import DeviceRecord
from gateway.core.eligibility import decide, window_edges
from gateway.core.manifest import Deployment

MAX_ENTRIES = 200_000  # above the inventory's default bound: a full site stays in memory


@dataclass(slots=True)
class _Decided:
    device: DeviceRecord  # the record it was made for (a later record with the same facts reuses it)
    deployments: tuple[Deployment, ...]
    slot: int
    matrix: CompatMatrix | None
    chosen: Deployment | None  # decide(...).deployment


class EligibilityMemo:
    def __init__(self) -> None:
        self._decided: dict[str, _Decided] = {}
        # The deployments as one tuple while they are the same objects, and their window edges:
        # replaced together, so a pass in another thread never reads one's edges with the other.
        self._pass: tuple[tuple[Deployment, ...], tuple[float, ...]] = ((), ())

    def pass_key(self, deployments: Sequence[Deployment], now: float) -> tuple[tuple[Deployment, ...], int]:
        """(the deployments as the memo's one tuple while they are the same objects, the slot of
        ``now`` among their window edges): once per pass, not per device."""
        held, edges = self._pass
        if len(held) != len(deployments) or any(a is not b for a, b in zip(held, deployments, strict=True)):
            held = tuple(deployments)
            edges = window_edges(held)
            self._pass = held, edges
        return held, bisect_right(edges, now)

    def chosen(
        self,
        key: tuple[tuple[Deployment, ...], int],
        device: DeviceRecord,
        now: float,
        matrix: CompatMatrix | None,
    ) -> Deployment | None:
        """``decide(deployments, device, now, matrix).deployment``, from memory when it may be."""
        deployments, slot = key
        known = self._decided.get(device.device_id)
        if (
            known is not None
            and known.deployments is deployments
            and known.slot == slot
            and known.matrix is matrix
        ):
            last = known.device
            if last is device or (
                last.model_version == device.model_version
                and last.model_id == device.model_id
                and (last.attrs is device.attrs or last.attrs == device.attrs)
            ):
                known.device = device
                return known.chosen
        chosen = decide(deployments, device, now, matrix).deployment
        if len(self._decided) >= MAX_ENTRIES:
            self._decided.clear()
        self._decided[device.device_id] = _Decided(device, deployments, slot, matrix, chosen)
        return chosen

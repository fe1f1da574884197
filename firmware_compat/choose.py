"""The "update firmware first" rule.

Given the versions of a model on offer (each with its firmware range) and a device's firmware: the
device gets the newest version its firmware supports; if a newer version exists that needs newer
firmware, the device is *blocked by firmware* at that version (the installer sees it, and the site
report carries it), whether or not an older version could be offered meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from firmware_compat.matrix import CompatMatrix
from firmware_compat.ranges import FirmwareRange
from firmware_compat.version import Version

T = TypeVar("T")


@dataclass(frozen=True)
class Offer(Generic[T]):
    version: Version
    firmware: FirmwareRange
    item: T  # what the caller offers (e.g. a deployment manifest)


@dataclass(frozen=True)
class Choice(Generic[T]):
    chosen: Offer[T] | None
    blocked_by: Offer[T] | None  # the newest version that needs newer firmware, if newer than chosen
    too_new: bool = False  # nothing chosen because the firmware is above every range


def choose(
    offers: Sequence[Offer[T]], firmware: Version, *, model_id: str = "", matrix: CompatMatrix | None = None
) -> Choice[T]:
    ranked = sorted(offers, key=lambda o: o.version.sort_key(), reverse=True)

    def fits(o: Offer[T]) -> bool:
        return o.firmware.contains(firmware) and (
            matrix is None or matrix.supported(model_id, firmware, o.version)
        )

    chosen = next((o for o in ranked if fits(o)), None)
    blocked = next(
        (
            o
            for o in ranked
            if (chosen is None or o.version > chosen.version)
            and not o.firmware.too_new(firmware)
            and not fits(o)
        ),
        None,
    )
    too_new = chosen is None and bool(ranked) and all(o.firmware.too_new(firmware) for o in ranked)
    return Choice(chosen, blocked, too_new)

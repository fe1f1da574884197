"""Firmware ranges: ``min_firmware`` and ``max_firmware`` of a manifest, both inclusive, either open.

``max_firmware = "2.9.9"`` admits 2.9.9 itself; a pre-release of the maximum (``2.9.9-rc.1``) is
below it and admitted, a pre-release of the minimum is below the minimum and refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_compat.version import Version, parse_version


@dataclass(frozen=True)
class FirmwareRange:
    min: Version | None = None
    max: Version | None = None

    @classmethod
    def parse(cls, min_text: str | None, max_text: str | None) -> FirmwareRange:
        return cls(
            parse_version(min_text) if min_text else None, parse_version(max_text) if max_text else None
        )

    def contains(self, version: Version) -> bool:
        return (self.min is None or version >= self.min) and (self.max is None or version <= self.max)

    def too_old(self, version: Version) -> bool:
        return self.min is not None and version < self.min

    def too_new(self, version: Version) -> bool:
        return self.max is not None and version > self.max

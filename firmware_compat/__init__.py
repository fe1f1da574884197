"""Firmware compatibility, a small pure library for device agents, the cloud and the gateway.

- :mod:`firmware_compat.version`: parse and order versions (``1.8.0``, ``fw_1.8.0``, ``v2.1``).
- :mod:`firmware_compat.ranges`: ``min_firmware``/``max_firmware``, inclusive.
- :mod:`firmware_compat.matrix`: the firmware -> supported model versions table.
- :mod:`firmware_compat.choose`: the "update firmware first" rule.

No I/O; nothing here imports the gateway.
"""

from firmware_compat.choose import Choice, Offer, choose
from firmware_compat.matrix import CompatMatrix, MatrixError, parse_matrix
from firmware_compat.ranges import FirmwareRange
from firmware_compat.version import Version, VersionError, parse_version, try_version

__all__ = [
    "Choice",
    "CompatMatrix",
    "FirmwareRange",
    "MatrixError",
    "Offer",
    "Version",
    "VersionError",
    "choose",
    "parse_matrix",
    "parse_version",
    "try_version",
]

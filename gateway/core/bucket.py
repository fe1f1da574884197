"""Percentage rollouts by a deterministic hash of (deployment, device id).

``bucket`` maps a device to a point in [0, 100) from SHA-256 of ``"<deployment key>/<device id>"``:
the same on every restart and on every gateway (no state, no randomness), independent between
deployments, and uniform. A device is in a rollout of p percent when its point is below p, so
raising the percentage only adds devices.
"""

from __future__ import annotations

import hashlib

_SCALE = 2**64


def bucket(deployment_key: str, device_id: str) -> float:
    digest = hashlib.sha256(f"{deployment_key}/{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / _SCALE


def in_rollout(percentage: float, deployment_key: str, device_id: str) -> bool:
    if percentage >= 100.0:
        return True
    if percentage <= 0.0:
        return False
    return bucket(deployment_key, device_id) < percentage

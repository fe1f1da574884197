"""How much of the data disk the gateway keeps free, and the words for "disk full".

The reserve (``store.min_free_bytes``, default 256 MiB) is what a download must leave free for the
outbox, the logs and the rest of the system. On a small disk (a 4 GB SD card with half of it
used) a fixed 256 MiB would refuse every artifact, so the reserve in effect is the configured one
capped at :data:`RESERVE_SHARE` (5 %) of the filesystem's size: ``min(min_free_bytes, 5 % of the
filesystem)``. When the reserve, not the space itself, is why a download is refused, the message
says so and names the setting, so an installer is not left looking for a full disk that is not.

:func:`space_refusal` and :func:`reserve_bytes` are pure; :func:`disk_space` is the one ``statvfs``.
"""

from __future__ import annotations

import os
from pathlib import Path

RESERVE_SHARE = 0.05


def reserve_bytes(configured: int, fs_total_bytes: int) -> int:
    """The reserve in effect: the configured one, at most 5 % of the filesystem."""
    return max(0, min(configured, int(fs_total_bytes * RESERVE_SHARE)))


def space_refusal(what: str, *, free: int, need: int, configured: int, fs_total_bytes: int) -> str | None:
    """Why ``need`` more bytes may not be written, or None when they may."""
    reserve = reserve_bytes(configured, fs_total_bytes)
    if free - need >= reserve:
        return None
    if free >= need:
        return (
            f"{what}: disk full: {need} bytes would leave {free - need} of {free} free bytes, less than "
            f"the reserve of {reserve} bytes (store.min_free_bytes = {configured}, at most "
            f"{RESERVE_SHARE:.0%} of the {fs_total_bytes}-byte filesystem)"
        )
    return f"{what}: disk full ({free} bytes free, {need} needed)"


def disk_space(path: Path) -> tuple[int, int]:
    """(bytes free to an unprivileged writer, filesystem size) of the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

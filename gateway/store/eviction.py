"""Which blobs to evict to stay under the quota, as a pure choice.

Least recently used first; never a protected blob (an artifact of a deployment in effect, the
previous stable version of a model, a transfer in flight). When the quota cannot be met without
touching a protected blob, the choice says so and evicts nothing it must keep: the caller refuses
the new download rather than breaking a rollback path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BlobUse:
    sha256: str
    size: int
    last_access: float


@dataclass(frozen=True)
class EvictionChoice:
    evict: tuple[str, ...]
    fits: bool  # the quota holds after evicting ``evict`` and adding ``incoming_bytes``
    freed_bytes: int


def choose_evictions(
    blobs: Sequence[BlobUse], protected: Iterable[str], *, quota_bytes: int, incoming_bytes: int = 0
) -> EvictionChoice:
    """Evict LRU-first until ``used + incoming <= quota``; ``quota_bytes == 0`` means no quota."""
    used = sum(b.size for b in blobs)
    if quota_bytes <= 0 or used + incoming_bytes <= quota_bytes:
        return EvictionChoice((), True, 0)
    keep = set(protected)
    evict: list[str] = []
    freed = 0
    for blob in sorted(blobs, key=lambda b: (b.last_access, b.sha256)):
        if used - freed + incoming_bytes <= quota_bytes:
            break
        if blob.sha256 in keep:
            continue
        evict.append(blob.sha256)
        freed += blob.size
    return EvictionChoice(tuple(evict), used - freed + incoming_bytes <= quota_bytes, freed)


def previous_stable(history: Sequence[str], in_effect: Iterable[str]) -> set[str]:
    """The version published just before each version in effect: its devices' path back."""
    live = set(in_effect)
    out: set[str] = set()
    for i, version in enumerate(history):
        if version in live:
            earlier = [v for v in history[:i] if v not in live]
            if earlier:
                out.add(earlier[-1])
    return out

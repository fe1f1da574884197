"""Which blobs to keep and which to evict to stay under the quota, as pure choices.

Protection is what a device can still be offered or fall back to, not everything an index lists:

* **offerable**: per model, cohort and firmware range, the newest deployment the cloud allows (not
  held by a coordinator command), and older ones of the group down to the first that is open to
  every device of the group (100 % and started): a device outside a newer version's percentage,
  or before its start, is offered the older one;
* **running**: the versions devices report running (the inventory's ``model_version``);
* **rollback**: per model, the gate keeper's rollback target of its newest offerable version (a
  pin), and, until that gate exists, the newest held version older than it (the baseline the
  keeper will choose), so a new version's fetch never evicts its own fallback; and the targets of
  halted candidates, whose devices are being sent back.

Everything else an index still lists (superseded versions) is a cache: least recently used first.
When the quota cannot be met without touching a protected blob, the choice says so and evicts
nothing it must keep: the caller refuses the new download rather than break a fallback path.

Values in (deployments, running versions, pins, blob sizes and last-use times), a choice out; no
I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from firmware_compat.version import try_version


@dataclass(frozen=True)
class BlobUse:
    sha256: str
    size: int
    last_access: float


@dataclass(frozen=True)
class Offered:
    """A deployment of the signed index in effect, reduced to what protection needs."""

    model_id: str
    version: str
    sha256: str
    cohort: str = ""
    firmware: tuple[str | None, str | None] = (None, None)  # min, max
    percent: float = 100.0
    start_time: float | None = None
    held: bool = False  # a signed coordinator command (paused, aborted) names it

    @property
    def group(self) -> tuple[str, str, str | None, str | None]:
        return (self.model_id, self.cohort, *self.firmware)


@dataclass(frozen=True)
class Named:
    """A URL name the store knows: ``model_id``/``version`` is the blob ``sha256``."""

    model_id: str
    version: str
    sha256: str


@dataclass(frozen=True)
class RollbackPin:
    """A gate's rollback target: ``candidate``'s previous stable artifact."""

    model_id: str
    candidate: str
    baseline_sha256: str
    halted: bool = False  # the candidate's gate halted or aborted: its devices roll back to it


@dataclass(frozen=True)
class EvictionChoice:
    evict: tuple[str, ...]
    fits: bool  # the quota holds after evicting ``evict`` and adding ``incoming_bytes``
    freed_bytes: int


def version_key(version: str) -> tuple[int, object]:
    """Order versions semantically; a version that does not parse sorts before every one that does."""
    v = try_version(version)
    return (1, v.sort_key()) if v is not None else (0, version)


def offerable(deployments: Iterable[Offered], now: float) -> set[str]:
    """The blobs a device can still be offered (see the module docstring)."""
    groups: dict[tuple[str, str, str | None, str | None], list[Offered]] = {}
    for d in deployments:
        if not d.held:
            groups.setdefault(d.group, []).append(d)
    keep: set[str] = set()
    for group in groups.values():
        for d in sorted(group, key=lambda d: version_key(d.version), reverse=True):
            keep.add(d.sha256)
            started = d.start_time is None or d.start_time <= now
            if started and d.percent >= 100:
                break  # every device of the group can have this one: older ones are superseded
    return keep


def rollback_targets(
    deployments: Iterable[Offered],
    pins: Iterable[RollbackPin],
    names: Iterable[Named],
    held: Iterable[str],
) -> set[str]:
    """Per model: the gate's pin of its newest offerable version, or, while that version has no
    gate yet, the newest held blob below it (the baseline the keeper will choose); and the pins
    of halted candidates, whose devices are being sent back. The pin of an older candidate that a
    newer one supersedes, and that is not halted, is let go: a model has one rollback target."""
    pins = list(pins)
    held_here = set(held)
    keep = {p.baseline_sha256 for p in pins if p.halted}
    newest: dict[str, Offered] = {}
    for d in deployments:
        if d.held:
            continue
        best = newest.get(d.model_id)
        if best is None or version_key(d.version) > version_key(best.version):
            newest[d.model_id] = d
    by_model: dict[str, list[Named]] = {}
    for n in names:
        by_model.setdefault(n.model_id, []).append(n)
    for model_id, top in newest.items():
        chosen = [p for p in pins if p.model_id == model_id and p.candidate == top.version]
        if chosen:
            keep.update(p.baseline_sha256 for p in chosen)
            continue
        below = [
            n
            for n in by_model.get(model_id, [])
            if n.sha256 in held_here and version_key(n.version) < version_key(top.version)
        ]
        if below:
            keep.add(max(below, key=lambda n: version_key(n.version)).sha256)
    return keep


def running_blobs(running: Iterable[tuple[str | None, str]], names: Iterable[Named]) -> set[str]:
    """The blobs of the versions devices report running (a device that names no model matches any)."""
    wanted = set(running)
    versions = {v for _m, v in wanted}
    return {
        n.sha256
        for n in names
        if n.version in versions and ((n.model_id, n.version) in wanted or (None, n.version) in wanted)
    }


def protected(
    *,
    deployments: Sequence[Offered],
    running: Iterable[tuple[str | None, str]],
    pins: Iterable[RollbackPin],
    names: Sequence[Named],
    held: Iterable[str],
    now: float,
) -> set[str]:
    """Every blob that must not be evicted: offerable, running, or a rollback target."""
    return (
        offerable(deployments, now)
        | running_blobs(running, names)
        | rollback_targets(deployments, pins, names, held)
    )


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


def is_held(commands: Mapping[str, str], model_id: str, version: str) -> bool:
    """A signed coordinator command names ``model@version`` or the whole model."""
    return bool(commands.get(f"{model_id}@{version}") or commands.get(model_id))

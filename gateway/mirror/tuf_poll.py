"""One TUF refresh over the mirror's upstream (``trust.format = "tuf"``), in the TUF 1.0 client
order (section 5.3 to 5.6): the root chain, the timestamp, the snapshot it names, ``targets``,
then every delegated role the snapshot names.

What the gateway already holds is fed first (held roots, the held timestamp as the floor against
rollback, the held snapshot and roles of the versions the new timestamp and snapshot still name),
so a poll where nothing changed costs one ``timestamp.json`` and one ``<N+1>.root.json`` probe.
Every download is bounded: by the length the verified parent metadata states, else by
:data:`gateway.trust.tuf.MAX_BYTES` (endless data). The rules are :class:`gateway.trust.tuf.TufSet`;
this shell fetches and feeds (CPU-heavy parses of big targets roles in a worker thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from gateway.core.errors import LengthMismatchError, TransportError, UntrustedError
from gateway.mirror.upstream import Upstream
from gateway.trust.tuf import MAX_BYTES, MAX_ROOT_ROTATIONS, TufSet


async def _get(upstream: Upstream, folder: str, name: str, max_bytes: int) -> bytes | None:
    """The file's bytes; None when the upstream has none (404)."""
    rel = f"{folder.strip('/')}/{name}" if folder.strip("/") else name
    try:
        return (await upstream.get(rel, max_bytes=max_bytes)).body
    except TransportError as exc:
        if exc.status == 404:
            return None
        if exc.status in (200, None) and "more than" in str(exc):
            raise LengthMismatchError(
                f"{name}: longer than the {max_bytes} bytes allowed (endless data)"
            ) from exc
        raise


async def _need(upstream: Upstream, folder: str, name: str, max_bytes: int) -> bytes:
    data = await _get(upstream, folder, name, max_bytes)
    if data is None:
        raise UntrustedError(f"{name}: not found upstream, though the verified metadata names it")
    return data


async def refresh(
    upstream: Upstream,
    folder: str,
    trusted_root: bytes,
    held: Mapping[str, bytes],
    now: float,
    site: str,
    previous: TufSet | None = None,
) -> TufSet:
    """A verified set (``changed`` False: the held one still stands); RemoteDataError with the
    reason when the upstream's metadata is refused, TransportError when it cannot be fetched.

    ``previous``, the set verified from ``held`` last time: when neither the root nor the
    timestamp changed, its roles are not verified again, only their expiry against ``now``."""
    s = TufSet(trusted_root, now, site)
    for _ in range(MAX_ROOT_ROTATIONS):
        name = s.next_root()
        data = held.get(name)
        if data is None:
            data = await _get(upstream, folder, name, MAX_BYTES["root"])
            if data is None:
                break
            s.changed = True
        s.root(data)
    if "timestamp.json" in held:
        s.timestamp(held["timestamp.json"], held=True)
    data = await _get(upstream, folder, "timestamp.json", MAX_BYTES["timestamp"])
    if data is None:
        raise TransportError(f"{folder}/timestamp.json: no TUF repository published", status=404)
    fresh = s.timestamp(data)
    if not fresh and not s.changed and previous is not None:
        previous.check_expiry(s.tms.reference_time)
        return s
    name, length = s.snapshot_name()
    if name in held:
        await asyncio.to_thread(s.snapshot, held[name], held=True)
    else:
        await asyncio.to_thread(s.snapshot, await _need(upstream, folder, name, length), held=False)
    while roles := s.roles():
        for role, delegator in roles:
            name, length = s.role_name(role)
            data = held.get(name)
            was_held = data is not None
            if data is None:
                data = await _need(upstream, folder, name, length)
            await asyncio.to_thread(s.targets, role, delegator, data, held=was_held)
    return s

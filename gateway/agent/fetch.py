"""A model into the device's inactive slot: the download (resumed with ``Range``/``If-Range`` after an
interruption, up to :data:`DOWNLOAD_ATTEMPTS` tries), its signature, the check of both, and the
commit; each step reported as an event (``downloaded``, ``verified``; ``failed`` when refused)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from gateway.agent.errors import AgentError, VerifyError
from gateway.agent.poll import MAX_SIGNATURE_BYTES, read_bounded
from gateway.agent.slots import Slots
from gateway.agent.transfer import download
from gateway.agent.verify import load_public_key, verify_artifact

log = logging.getLogger(__name__)

DOWNLOAD_ATTEMPTS = 3
Report = Callable[..., Awaitable[Any]]  # (event name, reason=None): one step told to the gateway


async def fetch_into_slot(
    s: aiohttp.ClientSession,
    slots: Slots,
    manifest: dict[str, Any],
    *,
    headers: dict[str, str],
    public_key_pem: bytes,
    device_id: str,
    report: Report,
    interrupt_after: int | None = None,
) -> None:
    """Into the inactive slot: download (resumed), verify, commit; ``failed`` when refused."""
    sha256 = str(manifest["sha256"])
    partial, etag = await asyncio.to_thread(slots.prepare, sha256)
    got_etag = etag

    async def remember(value: str) -> None:
        nonlocal got_etag
        got_etag = value
        await asyncio.to_thread(slots.remember_etag, sha256, value)

    complete = False
    for attempt in range(DOWNLOAD_ATTEMPTS):
        stop_after = interrupt_after if attempt == 0 else None
        try:
            complete = await download(
                s,
                manifest["artifact_url"],
                partial,
                length=int(manifest["length"]),
                etag=got_etag,
                headers=headers,
                on_etag=remember,
                stop_after=stop_after,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("%s: download interrupted (%s); resuming", device_id, exc)
        if complete:
            break
    if not complete:
        raise AgentError(f"download of {manifest['artifact_url']} did not complete")
    await report("downloaded")
    async with s.get(manifest["signature_url"], headers=headers) as r:
        if r.status != 200:
            raise AgentError(f"signature {manifest['signature_url']}: HTTP {r.status}")
        signature = await read_bounded(r, MAX_SIGNATURE_BYTES, "signature")
    key = load_public_key(public_key_pem)
    try:
        await asyncio.to_thread(verify_artifact, key, partial, signature, sha256)
    except VerifyError as exc:
        await asyncio.to_thread(slots.discard_partial)
        await report("failed", str(exc))
        raise
    await report("verified")
    await asyncio.to_thread(slots.commit, manifest["model_id"], manifest["version"], sha256)

"""Site indexes a parent gateway holds for its child gateways (tiers): ``mirror.child_sites``.

Besides its own site's index, a parent mirrors the signed index of each child site listed. Each is
verified exactly as the child itself will verify it (a trusted key's signature, a version never
lower than the one held, not expired by the trusted clock, made for that site or ``*``) and kept
as the cloud's raw bytes under ``<data>/trust/sites/<site>.json``: the parent never re-signs, so
the child checks the cloud's signature end to end. The parent prefetches the artifacts those
indexes name, so a child's transfers are served from here and cross the uplink once.

What it leaves to others: the child's gates, cohorts and windows (the parent neither judges nor
offers these deployments to its own devices), and the signed key list (the parent's own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.core.errors import RemoteDataError, StorageError, TransportError
from gateway.core.manifest import Deployment
from gateway.runtime import atomic
from gateway.runtime.stats import Stats
from gateway.trust.index import SiteIndex, TrustedIndex
from gateway.trust.state import TrustState

log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[tuple[bytes, Any] | None]]
"""The mirror's conditional GET: (body, validators) or None when unchanged."""


class ChildSites:
    """The child sites' indexes, verified and held. Its blocking parts run in worker threads."""

    def __init__(self, sites: Iterable[str], trust: TrustState, directory: Path, stats: Stats) -> None:
        self.sites = tuple(sites)
        self.trust = trust
        self.dir = directory
        self.stats = stats
        self.held: dict[str, SiteIndex] = {}

    def _verify(self, site: str, raw: bytes, system_now: float) -> SiteIndex:
        self.trust.refresh_keys()
        reading = self.trust.clock(system_now)
        held = self.held.get(site)
        check = TrustedIndex(
            self.trust.trusted.signing_keys(), site, highest_version=held.version if held else 0
        )
        check.index = held  # the same version with other content is refused too
        return check.verify_index(
            raw, reading.now, clock=reading, max_future_skew_s=self.trust.max_future_skew_s
        )

    def load(self, system_now: float) -> None:
        """Re-verify what was held before a restart (blocking); a file that fails is dropped."""
        for site in self.sites:
            path = self.dir / f"{site}.json"
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot read the held index of child site %s: %s", site, exc)
                continue
            try:
                self.held[site] = self._verify(site, raw, system_now)
            except RemoteDataError as exc:
                log.warning("held index of child site %s no longer verifies (%s): fetched again", site, exc)

    async def poll(self, fetch: Fetch, commit: Callable[[str, Any], None], system_now: float) -> bool:
        """One round over the child sites; True when any newly accepted index changed what is held."""
        changed = False
        for site in self.sites:
            rel = f"sites/{site}/index.json"
            try:
                got = await fetch(rel)
                if got is None:
                    continue
                raw, validators = got
                index = await asyncio.to_thread(self._verify, site, raw, system_now)
            except (TransportError, StorageError) as exc:
                self.stats.error("mirror.child_site_errors", f"{site}: {exc}")
                continue
            except RemoteDataError as exc:
                self.stats.error("mirror.rejected_child_indexes", f"{site}: {exc}")
                log.error("rejected the index of child site %s: %s", site, exc)
                continue
            held = self.held.get(site)
            if held is None or held.version != index.version:
                try:
                    await asyncio.to_thread(atomic.write_bytes, self.dir / f"{site}.json", raw)
                except StorageError as exc:  # validators not committed: fetched again next round
                    self.stats.error("mirror.child_site_errors", f"{site}: {exc}")
                    continue
                self.held[site] = index
                changed = True
                log.info("holding child site %s index version %d", site, index.version)
            commit(rel, validators)
        return changed

    def deployments(self) -> list[Deployment]:
        return [d for index in self.held.values() for d in index.deployments]

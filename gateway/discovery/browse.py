"""Find devices that advertise ``_ota-device._tcp.local.`` and feed them to the inventory.

Each device's TXT (``id``, ``hw``, ``fw``, ``model``, ``model_version`` and any other cohort
attribute, see :mod:`gateway.discovery.txt`) goes to ``sink.upsert(..., source="mdns")`` when it is
first seen and whenever it changes; ``sink.gone(..., source="mdns")`` follows a goodbye (a record with
TTL 0, RFC 6762 section 10.1) or the expiry of the device's PTR record, both of which python-zeroconf's
browser reports as "Removed".

Bounded: at most ``discovery.max_devices`` instance names are tracked (new ones beyond are dropped
and counted), TXT size and keys are bounded by the parser, resolutions run through a fixed number of
workers fed from a bounded set. A malformed record is logged (rate-limited) and ignored; nothing a
device sends raises out of the browser's callback.

The wire work (queries with known-answer suppression, cache, TTLs) is python-zeroconf's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from gateway.core.device import DeviceSink
from gateway.core.settings import DiscoverySettings
from gateway.discovery.net import Lan, open_lan
from gateway.discovery.txt import device_attrs
from gateway.runtime.tasks import Supervise, TaskGroup

log = logging.getLogger(__name__)

DEVICE_TYPE = "_ota-device._tcp.local."
RESOLVE_WORKERS = 4
RESOLVE_TIMEOUT_S = 3.0
LOG_BURST = 10  # log lines about bad or dropped records per LOG_WINDOW_S; the rest are counted
LOG_WINDOW_S = 60.0


@dataclass
class BrowseStats:
    tracked: int = 0  # instance names with a valid record
    malformed: int = 0  # records ignored as malformed
    dropped_full: int = 0  # new names ignored because max_devices were tracked
    unresolved: int = 0  # names that did not answer a resolve in time


class _Throttle:
    """At most ``burst`` log lines per window; says how many it held back."""

    def __init__(self, clock: Callable[[], float], burst: int = LOG_BURST, window_s: float = LOG_WINDOW_S):
        self._clock, self._burst, self._window_s = clock, burst, window_s
        self._start, self._count, self._held = 0.0, 0, 0

    def warning(self, msg: str, *args: object) -> None:
        now = self._clock()
        if now - self._start >= self._window_s:
            if self._held:
                log.warning("mDNS: %d more such lines held back", self._held)
            self._start, self._count, self._held = now, 0, 0
        if self._count < self._burst:
            self._count += 1
            log.warning(msg, *args)
        else:
            self._held += 1


class DeviceBrowser:
    """Browses ``_ota-device._tcp`` on a :class:`Lan` (its own, or one shared with the advertiser)."""

    def __init__(
        self,
        settings: DiscoverySettings,
        sink: DeviceSink,
        clock: Callable[[], float] = time.time,
        *,
        lan: Lan | None = None,
        supervise: Supervise | None = None,
    ) -> None:
        self.settings = settings
        self._supervise = supervise  # the resolvers run under the gateway's supervisor
        self.sink = sink
        self.clock = clock
        self.stats = BrowseStats()
        self._lan = lan
        self._own_lan = lan is None
        self._browser: AsyncServiceBrowser | None = None
        self._names: dict[str, str] = {}  # instance name -> device id
        self._owner: dict[str, str] = {}  # device id -> instance name that last claimed it
        self._seen: dict[str, bytes] = {}  # instance name -> TXT last applied (valid or not)
        self._pending: dict[str, None] = {}  # names to resolve over the network, in order
        self._wakeup = asyncio.Event()
        self._tasks = TaskGroup()
        self._throttle = _Throttle(clock)

    async def start(self) -> None:
        if self._lan is None:
            self._lan = open_lan(self.settings)
        for i in range(RESOLVE_WORKERS):
            self._tasks.spawn_loop(f"mdns-resolve-{i}", self._resolver, self._supervise)
        self._browser = AsyncServiceBrowser(
            self._lan.aiozc.zeroconf, [DEVICE_TYPE], handlers=[self._on_change]
        )

    async def stop(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        await self._tasks.close()
        if self._own_lan and self._lan is not None:
            await self._lan.close()
            self._lan = None

    @property
    def devices(self) -> dict[str, str]:
        """Instance name -> device id of every device currently tracked."""
        return dict(self._names)

    # -- zeroconf callback (runs on the loop; must never raise) -------------------------------------

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        try:
            if state_change is ServiceStateChange.Removed:
                self._removed(name)
                return
            new = name not in self._seen and name not in self._pending
            if new and len(self._seen) + len(self._pending) >= self.settings.max_devices:
                self.stats.dropped_full += 1
                self._throttle.warning(
                    "mDNS: tracking %d devices (discovery.max_devices): ignoring %r",
                    self.settings.max_devices,
                    name,
                )
                return
            info = AsyncServiceInfo(service_type, name)
            if info.load_from_cache(zeroconf):
                self._apply(name, info.text)
            else:
                self._pending[name] = None
                self._wakeup.set()
        except Exception:
            log.exception("mDNS: error handling %s for %r", state_change, name)

    def _removed(self, name: str) -> None:
        self._pending.pop(name, None)
        self._seen.pop(name, None)
        device_id = self._names.pop(name, None)
        self.stats.tracked = len(self._names)
        if device_id is None or self._owner.get(device_id) != name:
            return
        del self._owner[device_id]
        self.sink.gone(device_id, source="mdns", now=self.clock())

    def _apply(self, name: str, text: bytes) -> None:
        if self._seen.get(name) == text:
            return  # a refresh with the same TXT: nothing new
        self._seen[name] = text
        try:
            device_id, attrs = device_attrs(text)
        except ValueError as exc:
            self.stats.malformed += 1
            self._throttle.warning("mDNS: ignoring malformed record of %r: %s", name, exc)
            return
        previous = self._names.get(name)
        if previous is not None and previous != device_id and self._owner.get(previous) == name:
            del self._owner[previous]
            self.sink.gone(previous, source="mdns", now=self.clock())
        self._names[name] = device_id
        self._owner[device_id] = name
        self.stats.tracked = len(self._names)
        self.sink.upsert(device_id, attrs, source="mdns", now=self.clock())

    # -- resolution of names whose records are not all cached yet -----------------------------------

    async def _resolver(self) -> None:
        assert self._lan is not None
        zc = self._lan.aiozc.zeroconf
        while True:
            if not self._pending:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=LOG_WINDOW_S)
                except TimeoutError:
                    pass
                continue
            name = next(iter(self._pending))
            del self._pending[name]
            info = AsyncServiceInfo(DEVICE_TYPE, name)
            try:
                ok = await info.async_request(zc, RESOLVE_TIMEOUT_S * 1000)
            except Exception:
                log.exception("mDNS: error resolving %r", name)
                continue
            if ok:
                try:
                    self._apply(name, info.text)
                except Exception:
                    log.exception("mDNS: error applying %r", name)
            else:
                self.stats.unresolved += 1
                log.debug("mDNS: %r did not answer within %.0f s", name, RESOLVE_TIMEOUT_S)

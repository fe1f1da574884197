"""What a handler may reach: one typed application key per narrow object it uses.

The service fills these keys when it builds the apps (:func:`gateway.http.app.build_device_app`,
:func:`gateway.http.operator.build_operator_app`); a handler reads ``request.app[KEY]``. Where the
object lives in a room http must not import (the service, the telemetry ingest with its SQLite
outbox), a small protocol here says what http calls, and the service passes the real object.

Every handler is a function of the request in this one style. An endpoint that keeps something
between requests (the poll's HTTP caches, DDI's actions, the dashboard's views) keeps it in an
object made from settings values, under a typed key of its own module (``POLL_REPLIES``, ``DDI``,
``DASHBOARD``, the downloads' held-open blobs ``BLOBS``); the services it uses it reads from the keys here, like every other handler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from gateway.core.events import DeviceEvent
from gateway.core.settings import GateSettings
from gateway.inventory.access import ChildCredentials, Credentials
from gateway.inventory.store import Inventory
from gateway.rollout.keeper import GateKeeper
from gateway.rollout.polls import PollAnswers
from gateway.runtime.notify import Changes
from gateway.runtime.stats import Stats
from gateway.store.artifacts import ArtifactStore
from gateway.trust.index import KeyList, SiteIndex


class DeviceIngest(Protocol):
    """Metrics and events from a device (the telemetry ingest)."""

    async def metrics(self, device_id: str, payload: Mapping[str, Any], now: float) -> None:
        """Returns once the sample is durable; FormatError: invalid; StorageError: not durable."""
        ...

    def on_event(self, event: DeviceEvent) -> None: ...


class RelayJournal(Protocol):
    """The outbox, for records relayed from child gateways (tiers)."""

    def append_bounded(self, kind: str, texts: list[str], now: float, *, key: str, quota_bytes: int) -> int:
        """Blocking (a worker thread): all committed when it returns; OutboxFullError: no room for
        them (nothing is shed); StorageError: not durable."""
        ...


class GateControls(Protocol):
    """An operator's gate control, applied at once (the site loop)."""

    async def control_gate(self, deployment: str, action: str, by: str, why: str) -> None:
        """KeyError: no such gate; ControlRefused: why it would do nothing."""
        ...


SITE: web.AppKey[str] = web.AppKey("site", str)
GATE_SETTINGS: web.AppKey[GateSettings] = web.AppKey("gate_settings", GateSettings)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
STATS: web.AppKey[Stats] = web.AppKey("stats", Stats)
CREDENTIALS: web.AppKey[Credentials] = web.AppKey("credentials", Credentials)
INVENTORY: web.AppKey[Inventory] = web.AppKey("inventory", Inventory)
INGEST: web.AppKey[DeviceIngest] = web.AppKey("ingest")
STORE: web.AppKey[ArtifactStore] = web.AppKey("store", ArtifactStore)
POLLS: web.AppKey[PollAnswers] = web.AppKey("polls", PollAnswers)  # the poll answers (memo, gates)
CHANGES: web.AppKey[Changes] = web.AppKey("changes", Changes)  # what long polls wait on
HELD_INDEX: web.AppKey[Callable[[], SiteIndex | None]] = web.AppKey("held_index")
HELD_KEYS: web.AppKey[Callable[[], KeyList | None]] = web.AppKey("held_keys")
HELD_TUF: web.AppKey[Callable[[str], bytes | None]] = web.AppKey("held_tuf")  # TUF metadata by file name
HELD_SITE: web.AppKey[Callable[[str], SiteIndex | None]] = web.AppKey("held_site")  # child sites' indexes
RELAY: web.AppKey[RelayJournal] = web.AppKey("relay")
CHILDREN: web.AppKey[ChildCredentials] = web.AppKey("children", ChildCredentials)  # who is a child gateway
RELAY_QUOTA: web.AppKey[int] = web.AppKey("relay_quota", int)  # outbox bytes per child site
GATES: web.AppKey[GateKeeper] = web.AppKey("gates", GateKeeper)
GATE_CONTROLS: web.AppKey[GateControls] = web.AppKey("gate_controls")
STATUS: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("status")

"""The device-facing aiohttp application: downloads, polls, metrics, events, tier endpoints, and
hawkBit DDI (:mod:`gateway.http.ddi`) when ``ddi.enabled``.

This module only assembles routes; each concern has its own module (``/healthz`` and ``/readyz``
are :mod:`gateway.http.probes`, added by the service). The verified indexes and key list it
holds for child gateways (tiers) are :mod:`gateway.http.tiers`; the uplink relay for them
:mod:`gateway.http.relay`.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.core.settings import Settings
from gateway.http import devices
from gateway.http.artifacts import add_artifact_routes
from gateway.http.context import (
    CHANGES,
    CHILDREN,
    CLOCK,
    CREDENTIALS,
    HELD_INDEX,
    HELD_KEYS,
    HELD_SITE,
    HELD_TUF,
    INGEST,
    INVENTORY,
    POLLS,
    SITE,
    STATS,
    STORE,
    DeviceIngest,
    RelayJournal,
)
from gateway.http.ddi import add_ddi_routes
from gateway.http.errors import map_errors
from gateway.http.polling import POLL_REPLIES, PollReplies, poll
from gateway.http.relay import add_relay_routes
from gateway.http.samples import add_sample_routes
from gateway.http.tiers import add_tier_routes
from gateway.inventory.access import ChildCredentials, Credentials
from gateway.inventory.store import Inventory
from gateway.rollout.polls import PollAnswers
from gateway.runtime.notify import Changes
from gateway.runtime.stats import Stats
from gateway.samples.desk import SampleDesk
from gateway.store.artifacts import ArtifactStore
from gateway.trust.index import KeyList, SiteIndex


def build_device_app(
    settings: Settings,
    *,
    credentials: Credentials,
    inventory: Inventory,
    stats: Stats,
    clock: Callable[[], float],
    polls: PollAnswers,
    changes: Changes,
    ingest: DeviceIngest,
    store: ArtifactStore,
    held_index: Callable[[], SiteIndex | None],
    held_keys: Callable[[], KeyList | None],
    held_site: Callable[[str], SiteIndex | None] = lambda site: None,
    held_tuf: Callable[[str], bytes | None] = lambda name: None,
    relay: RelayJournal | None = None,
    samples: SampleDesk | None = None,
) -> web.Application:
    app = web.Application(client_max_size=settings.http.max_body_bytes, middlewares=[map_errors])
    app[SITE] = settings.site
    app[CREDENTIALS] = credentials
    app[INVENTORY] = inventory
    app[STATS] = stats
    app[CLOCK] = clock
    app[INGEST] = ingest
    app[HELD_INDEX] = held_index
    app[HELD_KEYS] = held_keys
    app[HELD_SITE] = held_site
    app[CHILDREN] = ChildCredentials(settings.mirror.child_sites, settings.mirror.child_tokens)
    app[HELD_TUF] = held_tuf
    app[POLLS] = polls
    app[CHANGES] = changes
    app[STORE] = store
    add_tier_routes(app)
    if relay is not None:  # a parent's uplink relay for its child gateways
        add_relay_routes(app, relay, settings)
    app[POLL_REPLIES] = PollReplies(settings.devices, settings.http)
    app.router.add_get("/devices/{device_id}/updates", poll)
    app.router.add_post("/devices/{device_id}/events", devices.event)
    app.router.add_post("/devices/{device_id}/metrics", devices.metrics)
    if samples is not None:  # samples for retraining (a 404 with the reason while samples.enabled is off)
        add_sample_routes(app, samples)
    add_artifact_routes(app, store)
    if settings.ddi.enabled:  # hawkBit DDI: the same answers, credentials and events as above
        add_ddi_routes(app, settings)
    return app

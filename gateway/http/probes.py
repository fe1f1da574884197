"""``/healthz`` (alive) and ``/readyz`` (ready to serve the site), on the device and operator ports.

``/healthz`` answers 200 whenever the event loop answers: a supervisor restarts the process only
when it does not. ``/readyz`` answers 200 ``{"ready": true}``, or 503 with the reasons as JSON
(``{"ready": false, "reasons": [...]}``): no index accepted or it expired, the clock not trusted,
the store not writable, a listener not up (judged in :mod:`gateway.core.readiness`).

On the device port both answer without a device credential (a container health check or a load
balancer has none, and they say nothing a device could misuse); on the operator port they pass the
operator guard like every other route (its token when one is set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aiohttp import web


class ReadinessCheck(Protocol):
    async def reasons(self) -> Sequence[str]:
        """Why the gateway is not ready; empty when it is."""
        ...


READINESS: web.AppKey[ReadinessCheck] = web.AppKey("readiness")
PROBE_SITE: web.AppKey[str] = web.AppKey("probe_site", str)
NO_STORE = {"Cache-Control": "no-store"}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "site": request.app[PROBE_SITE]}, headers=NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    reasons = list(await request.app[READINESS].reasons())
    return web.json_response(
        {"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200, headers=NO_STORE
    )


def add_probe_routes(app: web.Application, readiness: ReadinessCheck, site: str) -> None:
    app[READINESS] = readiness
    app[PROBE_SITE] = site
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

"""``GET /metrics`` on the operator port: the Prometheus text exposition.

It passes the operator guard like every other operator route: with ``operator.token`` set, the
scraper sends it (Prometheus: ``authorization: {type: Bearer, credentials: ...}`` in the scrape
config); on loopback without a token, anyone on the box may read it. What is exposed is built in
:mod:`gateway.ops.prometheus`; this module only serves it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Exposition = Callable[[], Awaitable[bytes]]
EXPOSITION: web.AppKey[Exposition] = web.AppKey("metrics_exposition")
# The text format's content type (prometheus_client.CONTENT_TYPE_LATEST), without aiohttp's charset
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[EXPOSITION]()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


def add_metrics_route(app: web.Application, exposition: Exposition) -> None:
    app[EXPOSITION] = exposition
    app.router.add_get("/metrics", metrics)

"""``POST /devices/{device_id}/samples``: a device's sample for retraining (issue 26).

Access as for metrics and events (:func:`gateway.http.devices.authorize`, a write): a device
offers only its own samples. The body is the JSON of :mod:`gateway.core.samples.offer`. Answers:
200 ``{"accepted": 1, "sha256": ..., "outcome": "new" | "duplicate" | "dropped_full"}`` once the
sample is kept on disk (or known); 400 naming the bad field; 404 while ``samples.enabled`` is
false; 413 past the body bound; 503 with ``Retry-After`` when the disk cannot keep it. A refused
body changes nothing.
"""

from __future__ import annotations

from aiohttp import web

from gateway.core.errors import FormatError, StorageError
from gateway.http.context import CLOCK, STATS
from gateway.http.devices import authorize, device_id_of, json_body
from gateway.http.errors import storage_unavailable
from gateway.samples.desk import SampleDesk

SAMPLES: web.AppKey[SampleDesk] = web.AppKey("samples", SampleDesk)


async def offer(request: web.Request) -> web.Response:
    desk = request.app[SAMPLES]
    device_id = device_id_of(request)
    authorize(request, device_id, write=True)
    if not desk.enabled:
        raise web.HTTPNotFound(text="samples are not taken at this site (samples.enabled = false)\n")
    doc = await json_body(request)
    try:
        kept = await desk.take(device_id, doc, request.app[CLOCK]())
    except FormatError as exc:  # counted here; the 400 is the middleware's (gateway.http.errors)
        request.app[STATS].inc("samples.refused_400")
        raise FormatError(f"sample: {exc}") from None
    except StorageError as exc:
        raise storage_unavailable(request, "samples.unavailable", "keep the sample", exc) from None
    return web.json_response({"accepted": 1, "sha256": kept.sha256, "outcome": kept.outcome})


def add_sample_routes(app: web.Application, desk: SampleDesk) -> None:
    app[SAMPLES] = desk
    app.router.add_post("/devices/{device_id}/samples", offer)

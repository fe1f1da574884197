"""The gateway's error tree as HTTP answers, in one place (as httpx's ``map_exceptions`` maps its
transports' errors): one aiohttp middleware on the device and operator apps.

    FormatError, and any RemoteDataError   400, the reason as the body (what was wrong, where)
    StorageError (OutboxFullError, ...)    503 with ``Retry-After``, counted: not the sender's
                                           fault, and not a crash either

A handler raises the error the core or a room gave it (or a :class:`FormatError` of its own for a
bad path, query or header) and does not translate it; the reason a person reads is the error's
text. Where a handler has more to say than the tree does (a write's own counter and words, the
relay's full outbox), it catches that error itself. Everything aiohttp raises on purpose
(``web.HTTPException``) passes through untouched, so a bad request is never a 500.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.core.errors import RemoteDataError, StorageError
from gateway.http.context import STATS

STORAGE_RETRY_AFTER_S = 60


def storage_unavailable(
    request: web.Request, counter: str, what: str, exc: StorageError
) -> web.HTTPServiceUnavailable:
    """A write the gateway could not make durable (disk full, read-only): not the device's fault
    and not a crash; counted, and answered 503 with the time to send it again."""
    if STATS in request.app:
        request.app[STATS].error(counter, str(exc))
    return web.HTTPServiceUnavailable(
        text=f"cannot {what} now ({exc}); retry later\n",
        headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
    )


@web.middleware
async def map_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RemoteDataError as exc:  # the request's own content: the sender can fix it
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    except StorageError as exc:  # a write no handler had its own words for
        raise storage_unavailable(request, "http.storage_unavailable", "do that", exc) from None

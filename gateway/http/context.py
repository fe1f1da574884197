"""How a handler reaches the gateway it serves: one typed application key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from gateway.service import Gateway

GATEWAY: web.AppKey[Any] = web.AppKey("gateway", object)


def gateway_of(request: web.Request) -> Gateway:
    gw: Gateway = request.app[GATEWAY]
    return gw

"""The operator's one screen: a page that polls JSON, drawn from the status, gates, devices and
the telemetry history.

- ``GET /``: the page (``static/index.html``, with this process's control token in a ``<meta>``),
  and its script and style sheet under ``/dashboard/``; all three are package data read once when
  the app is built (:meth:`Assets.load`), gzipped once, and served from memory.
- ``GET /dashboard/state``: everything but the device list, as text for people (:mod:`.view`,
  :mod:`.gate_panel`), with the charts as SVG (:mod:`.svg`). Built at most once a second, however
  many screens are open; the charts only when a window closed or a gate changed.
- ``GET /dashboard/devices?q=&version=&cohort=&state=&seen=&blocked=&offset=&limit=``: one page of
  the inventory (:mod:`.devices`); a bad parameter is a 400 saying which.

The gate buttons post to the operator API's own ``/gates/{deployment}/{action}``, same-origin JSON
with the token (:func:`gateway.http.operator.refusal` keeps those rules). The pages send a strict
Content-Security-Policy: no inline script, nothing from elsewhere, no framing.
"""

from gateway.http.dashboard.routes import Assets, Dashboard, add_routes

__all__ = ["Assets", "Dashboard", "add_routes"]

"""The dashboard's handlers and the little state they keep (see the package docstring)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from html import escape
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.core.device import still_on
from gateway.core.manifest import Deployment, parse_deployment
from gateway.core.settings import Settings
from gateway.http.dashboard import devices as D
from gateway.http.dashboard import drift_panel, gate_panel, human, samples_panel, view
from gateway.http.dashboard.progress import RateMeter
from gateway.http.dashboard.svg import Series, line_chart
from gateway.inventory.store import Inventory
from gateway.rollout.keeper import GateKeeper
from gateway.runtime.redact import redact_tree
from gateway.telemetry.drift import DriftWatch
from gateway.telemetry.history import Point, WindowHistory

STATE_TTL_S = 1.0
DEVICES_TTL_S = 2.0
MAX_CACHED_PAGES = 32
MAX_VERSION_CHARTS = 6
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, gzip.compress(body, 9, mtime=0), content_type, hashlib.sha256(body).hexdigest()[:16])


@dataclass(frozen=True)
class Assets:
    page: Asset
    script: Asset
    style: Asset

    @classmethod
    def load(cls, csrf_token: str) -> Assets:
        """Blocking (at start-up): the package's static files, the page with the token in it."""
        folder = resources.files("gateway.http.dashboard") / "static"
        page = (folder / "index.html").read_text(encoding="utf-8").replace("{{CSRF}}", escape(csrf_token))
        return cls(
            Asset.of(page.encode(), "text/html; charset=utf-8"),
            Asset.of((folder / "app.js").read_bytes(), "text/javascript; charset=utf-8"),
            Asset.of((folder / "app.css").read_bytes(), "text/css; charset=utf-8"),
        )


def _serve(asset: Asset, request: web.Request, *, cache: str) -> web.Response:
    headers = {
        **SECURITY_HEADERS,
        "Cache-Control": cache,
        "ETag": f'"{asset.etag}"',
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("If-None-Match") == f'"{asset.etag}"':
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=asset.gzipped, headers={**headers, "Content-Type": asset.content_type})
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


class Dashboard:
    """What the handlers share: the sources, the rate meter, and the last state and charts built."""

    def __init__(
        self,
        assets: Assets,
        settings: Settings,
        *,
        status: Callable[[], dict[str, Any]],
        gates: GateKeeper,
        inventory: Inventory,
        history: WindowHistory,
        drift: DriftWatch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.assets = assets
        self.settings = settings
        self.status = status
        self.gates = gates
        self.inventory = inventory
        self.history = history
        self.drift = drift
        self.clock = clock
        self.meter = RateMeter()
        self._state: tuple[float, bytes] | None = None
        self._pages: dict[tuple[D.DeviceQuery, int, int], bytes] = {}
        self._charts: tuple[tuple[int, int], dict[str, list[dict[str, str]]]] | None = None

    async def device_page(self, query: D.DeviceQuery) -> bytes:
        """One page of devices. The pass over a big inventory runs in a worker thread on a snapshot
        (the records are frozen values), so the loop keeps answering devices meanwhile; the same
        query is answered from the last result while the inventory has not changed (for a second
        or two: "last seen" moves on its own)."""
        now = self.clock()
        key = (query, self.inventory.version, int(now / DEVICES_TTL_S))
        hit = self._pages.get(key)
        if hit is not None:
            return hit
        records = self.inventory.records()
        cohort = self.settings.telemetry.cohort_attribute
        doc = await asyncio.to_thread(D.select, records, query, now=now, cohort_attribute=cohort)
        body = json.dumps(doc).encode()
        self._pages = {k: v for k, v in self._pages.items() if k[1:] == key[1:]}  # drop stale pages
        if len(self._pages) < MAX_CACHED_PAGES:
            self._pages[key] = body
        return body

    def _deployment(self, key: str) -> Deployment | None:
        site = self.gates.site
        for d in site.deployments:
            if d.key == key:
                return d
        raw = site.known.get(key)
        try:
            return parse_deployment(raw) if raw is not None else None
        except Exception:
            return None

    def charts(self) -> dict[str, list[dict[str, str]]]:
        """Per gate, and per other model version heard from; redrawn only when something changed."""
        key = (self.history.version, self.gates.version)
        if self._charts is not None and self._charts[0] == key:
            return self._charts[1]
        out: dict[str, list[dict[str, str]]] = {}
        shown: set[tuple[str, str]] = set()
        for name, g in self.gates.gates.items():
            lim = gate_panel.limits_of(self._deployment(name), self.settings.gates)
            out[name] = gate_panel.charts(g, lim, self.history)
            shown.add((g.model_id, g.version))
        others = [k for k in reversed(self.history.keys()) if not k[2] and (k[0], k[1]) not in shown]
        for model, version, _ in others[:MAX_VERSION_CHARTS]:
            out[f"{model}@{version}"] = version_charts(self.history.series(model, version))
        self._charts = (key, out)
        return out

    def _on_version(self, device_id: str, *, version: str) -> bool:
        """Whether the inventory has the device on ``version`` still (its last report)."""
        return still_on(self.inventory.get(device_id), version)

    def state(self, now: float) -> bytes:
        if self._state is not None and 0 <= now - self._state[0] < STATE_TTL_S:
            return self._state[1]
        st = redact_tree(self.status())
        wanted = {
            d["sha256"]: (int(d.get("progress_bytes") or 0), int(d.get("length") or 0))
            for d in st.get("deployments", ())
            if not d.get("mirrored")
        }
        progress = self.meter.observe(wanted, now)
        charts = self.charts()
        gates = []
        for name, g in self.gates.gates.items():
            panel = gate_panel.panel(
                g,
                deployment=self._deployment(name),
                settings=self.settings.gates,
                history=self.history,
                now=now,
                on_candidate=partial(self._on_version, version=g.version),
            )
            gates.append({**panel, "charts": charts.get(name, [])})
        versions = [{"name": k, "charts": v} for k, v in charts.items() if k not in self.gates.gates]
        doc = {
            "site": str(st["gateway"]["site"]),
            "at": time.strftime("%H:%M:%S", time.localtime(now)),
            "alerts": view.alerts(st, now),
            "summary": view.summary(st, now),
            "gates": gates,
            "versions": versions,
            "mirroring": view.mirroring(st, progress),
            "uplink": view.uplink(st),
            "samples": samples_panel.rows(st),
            "box": view.box_health(st, len(self.inventory.devices)),
            "errors": view.last_errors(st),
            "window": human.duration(self.settings.telemetry.window_s),
            "drift": drift_panel.charts(self.drift.history, self.drift.settings.alert_at)
            if self.drift
            else [],
        }
        body = web.json_response(doc).body
        assert isinstance(body, bytes)
        self._state = (now, body)
        return body


def version_charts(points: tuple[Point, ...]) -> list[dict[str, str]]:
    """A model version with no gate (the stable one, or one the site does not gate): its own lines."""

    def one(
        title: str, label: str, value: Callable[[Point], float | None], fmt: Callable[[float], str]
    ) -> dict[str, str]:
        series = [Series(label, [(p.end, value(p)) for p in points])]
        return {"title": title, "svg": line_chart(title, series, fmt=fmt)}

    return [
        one("Latency p95", "p95", lambda p: p.latency_p95_ms, lambda v: human.number(v, "ms")),
        one("Error rate", "errors", lambda p: p.error_rate, human.share),
        one("CPU", "cpu", lambda p: p.cpu_percent, human.percent),
        one("Temperature", "temperature", lambda p: p.temperature_c, lambda v: human.number(v, "°C")),
    ]


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard", Dashboard)


async def page(request: web.Request) -> web.Response:
    # the page carries this process's control token: never cached, always the current one
    return _serve(request.app[DASHBOARD].assets.page, request, cache="no-store")


async def script(request: web.Request) -> web.Response:
    return _serve(request.app[DASHBOARD].assets.script, request, cache="no-cache")


async def style(request: web.Request) -> web.Response:
    return _serve(request.app[DASHBOARD].assets.style, request, cache="no-cache")


async def state(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    body = dash.state(dash.clock())
    resp = web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})
    resp.enable_compression()
    return resp


async def device_list(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    try:
        query = D.DeviceQuery.parse(_single(request.query))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    resp = web.Response(
        body=await dash.device_page(query),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
    resp.enable_compression()
    return resp


def _single(query: Mapping[str, str]) -> dict[str, str]:
    """The query string as one value per name (the first), refusing none."""
    out: dict[str, str] = {}
    for k, v in query.items():
        out.setdefault(k, v)
    return out


def add_routes(app: web.Application, dashboard: Dashboard) -> None:
    app[DASHBOARD] = dashboard
    app.router.add_get("/", page)
    app.router.add_get("/dashboard/app.js", script)
    app.router.add_get("/dashboard/app.css", style)
    app.router.add_get("/dashboard/state", state)
    app.router.add_get("/dashboard/devices", device_list)

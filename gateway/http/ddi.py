"""hawkBit DDI on the device port: ``/{tenant}/controller/v1/{controllerId}`` for stock update
clients (SWUpdate's suricatta, rauc-hawkbit-updater, Zephyr), held by the same rules as every device.

A DDI controller is a device: the same credentials (:func:`gateway.http.devices.admit`, with
``TargetToken``/``GatewayToken`` read as its token), the same inventory record (``configData`` is
its attributes), and the same answer as its native poll (:class:`gateway.rollout.polls.PollAnswers`:
eligibility, fail-closed waves, gate admission, rollback after a halt). The answer's deployment is
offered as one action (:mod:`gateway.core.ddi`) whose artifact is the cloud's own file served from
this gateway's verified, resumable ``/artifacts/`` URL; its feedback goes to the same listener as
``POST /devices/{id}/events`` (the inventory and the gates). The shadow stage has no DDI form: a
DDI device in a shadow wave is offered nothing until the waves proper.

What it keeps, in memory only: the actions it offered (action id -> deployment), each device's
action in progress (from fetching ``deploymentBase`` until a closed feedback) so a withdrawn or
halted action is cancelled (``cancelAction``) before anything else is offered (a device that refuses,
``rejected`` as RAUC does once installing, is asked once and its result still counts), which devices sent
``configData`` since start or since their last closed action (the others are asked for it:
an update may have changed ``fw``), and each artifact's SHA-1 and MD5 (DDI
clients check those; the cloud signs SHA-256), hashed once off the loop from the verified blob.
After a restart a device's action in progress is forgotten: the next answer is offered afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from random import getrandbits
from types import MappingProxyType

from aiohttp import web

from gateway.core import ddi
from gateway.core.errors import FormatError
from gateway.core.events import DeviceEvent
from gateway.core.manifest import Deployment
from gateway.core.pacing import jittered_seconds_table
from gateway.core.policy import PollAnswer
from gateway.core.settings import Settings
from gateway.http.context import CLOCK, CREDENTIALS, INGEST, INVENTORY, POLLS, STATS, STORE
from gateway.http.devices import admit, device_id_of, json_body
from gateway.store.lookup import Verified

RETRY_BITS = 10
MAX_ACTIONS = 4096  # distinct actions remembered (deployments and rollbacks): a handful in practice
MAX_HASHED = 256  # artifacts whose SHA-1/MD5 are remembered
HASH_BLOCK = 1 << 20
NO_ATTRS: Mapping[str, str] = MappingProxyType({})  # a DDI poll carries no attributes: one shared object


@dataclass(frozen=True)
class Offer:
    deployment: Deployment
    rollback: bool


def _hashes(path: Path) -> tuple[str, str, str]:
    """(sha256, sha1, md5) of a file, in a thread: the caller compares the sha256 with the verified one."""
    h256, h1, h5 = hashlib.sha256(), hashlib.sha1(usedforsecurity=False), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            h256.update(block)
            h1.update(block)
            h5.update(block)
    return h256.hexdigest(), h1.hexdigest(), h5.hexdigest()


class DdiActions:
    """What DDI keeps between requests (the actions offered, in progress, refused; who described
    itself; the artifacts' sums), made from settings values; the handlers read it from :data:`DDI`."""

    def __init__(self, settings: Settings) -> None:
        self.tenant = settings.ddi.tenant
        self.max_devices = settings.devices.max_devices
        self.public_url = settings.http.public_url.rstrip("/")
        self.scheme = "https" if settings.http.tls_cert else "http"
        self.sleep_s = jittered_seconds_table(
            settings.devices.poll_interval_s, settings.devices.poll_jitter, RETRY_BITS
        )
        self.offered: dict[int, Offer] = {}
        self.in_progress: dict[str, int] = {}
        self.refused: dict[str, int] = {}  # device -> its action in progress whose cancellation it refused
        self.described: set[str] = set()  # devices that sent configData since start
        self.hashed: dict[str, asyncio.Future[tuple[str, str]]] = {}

    # -- shared steps ------------------------------------------------------------------------------

    def offer(self, answer: PollAnswer) -> int | None:
        """The action of what the answer offers (nothing in the shadow stage)."""
        d = answer.deployment
        if d is None or answer.shadow:
            return None
        action = ddi.action_id(d.model_id, d.version, d.sha256, rollback=answer.rollback)
        if action not in self.offered:
            if len(self.offered) >= MAX_ACTIONS:
                self.offered.clear()
            self.offered[action] = Offer(d, answer.rollback)
        return action

    def controller(self, request: web.Request, device_id: str) -> str:
        base = self.public_url or f"{self.scheme}://{request.host}"
        return f"{base}/{self.tenant}/controller/v1/{device_id}"

    def start(self, device_id: str, action: int) -> None:
        if device_id not in self.in_progress and len(self.in_progress) >= self.max_devices:
            self.done(next(iter(self.in_progress)))
        if self.in_progress.get(device_id) != action:
            self.refused.pop(device_id, None)
        self.in_progress[device_id] = action

    def done(self, device_id: str) -> None:
        self.in_progress.pop(device_id, None)
        self.refused.pop(device_id, None)

    def to_cancel(self, device_id: str, offer: int | None) -> int | None:
        """The device's action in progress when it is no longer offered, unless it refused to stop."""
        running = self.in_progress.get(device_id)
        if running is None or running == offer or self.refused.get(device_id) == running:
            return None
        return running

    async def sums(self, found: Verified) -> tuple[str, str]:
        """The verified blob's SHA-1 and MD5, hashed once (concurrent askers share the work)."""
        fut = self.hashed.get(found.sha256)
        if fut is None or (fut.done() and fut.exception() is not None):
            if len(self.hashed) >= MAX_HASHED:
                self.hashed.clear()
            fut = self.hashed[found.sha256] = asyncio.ensure_future(self._hash(found))
        return await asyncio.shield(fut)

    async def _hash(self, found: Verified) -> tuple[str, str]:
        try:
            sha256, sha1, md5 = await asyncio.to_thread(_hashes, found.path)
        except OSError as exc:
            raise web.HTTPServiceUnavailable(
                text=f"cannot read the artifact now ({exc.strerror})\n", headers={"Retry-After": "30"}
            ) from None
        if sha256 != found.sha256:  # changed on disk since it was verified: never describe other bytes
            raise web.HTTPServiceUnavailable(
                text="the artifact is being checked again\n", headers={"Retry-After": "30"}
            )
        return sha1, md5


DDI: web.AppKey[DdiActions] = web.AppKey("ddi", DdiActions)


def _ask(request: web.Request, *, write: bool) -> tuple[str, bool, PollAnswer]:
    """The controller id, whether it may change what is recorded about it, and its answer: the
    native poll's own steps (credentials, ``inventory.polled``, the poll answer)."""
    app = request.app
    device_id = device_id_of(request)
    now = app[CLOCK]()
    owner = admit(app[CREDENTIALS], app[STATS], now, request, device_id, write)
    inv = app[INVENTORY]
    record = inv.polled(device_id, NO_ATTRS, now) if owner else inv.devices.get(device_id)
    return device_id, owner, app[POLLS].answer(record, now)


def _action(request: web.Request) -> int:
    return ddi.parse_action_id(request.match_info["action"])


async def _feedback_body(request: web.Request, action: int) -> ddi.Feedback:
    doc = await json_body(request)
    try:
        return ddi.parse_feedback(doc, action)
    except FormatError:  # counted here; the 400 is the middleware's (gateway.http.errors)
        request.app[STATS].inc("ddi.refused_feedback")
        raise


# -- handlers ----------------------------------------------------------------------------------


async def base(request: web.Request) -> web.Response:
    app = request.app
    acts = app[DDI]
    device_id, owner, answer = _ask(request, write=False)
    offer = acts.offer(answer)
    # withdrawn or halted while the device had it in progress: cancelled before anything else
    cancel = acts.to_cancel(device_id, offer) if owner else None
    if owner:
        app[INVENTORY].set_blocked(device_id, answer.blocked_by_firmware, app[CLOCK]())
    app[STATS].count("devices.poll_answers", answer="ddi", reason=answer.reason)
    doc = ddi.base_document(
        acts.controller(request, device_id),
        acts.sleep_s[getrandbits(RETRY_BITS)],
        deployment=offer,
        cancel=cancel,
        config_data=owner and device_id not in acts.described,
    )
    return web.json_response(doc, headers={"Cache-Control": "no-store", "X-OTA-Reason": answer.reason})


async def deployment(request: web.Request) -> web.Response:
    app = request.app
    acts = app[DDI]
    device_id, owner, answer = _ask(request, write=False)
    action = _action(request)
    if action != acts.offer(answer):
        raise web.HTTPNotFound(text=f"action {action} is not offered to this device ({answer.reason})\n")
    offer = acts.offered[action]
    d = offer.deployment
    found = app[STORE].lookup(d.model_id, d.version, d.filename)
    if not isinstance(found, Verified) or found.sha256 != d.sha256:
        raise web.HTTPServiceUnavailable(
            text="the artifact is not held here now\n", headers={"Retry-After": "30"}
        )
    sha1, md5 = await acts.sums(found)
    if owner:
        acts.start(device_id, action)
    controller = acts.controller(request, device_id)
    site_url = controller.split(f"/{acts.tenant}/controller/", 1)[0]
    artifact = ddi.Artifact(
        filename=d.filename,
        size=found.size,
        sha256=d.sha256,
        sha1=sha1,
        md5=md5,
        url=f"{site_url}/artifacts/{d.model_id}/{d.version}/{d.filename}",
        md5sum_url=f"{controller}/softwaremodules/{action}/artifacts/{d.filename}.MD5SUM",
    )
    doc = ddi.deployment_document(action, d.model_id, d.version, artifact)
    return web.json_response(doc, headers={"Cache-Control": "no-store"})


async def feedback(request: web.Request) -> web.Response:
    app = request.app
    acts = app[DDI]
    device_id, _owner, answer = _ask(request, write=True)
    action = _action(request)
    fb = await _feedback_body(request, action)
    if action not in (acts.offer(answer), acts.in_progress.get(device_id)) or action not in acts.offered:
        app[STATS].inc("ddi.refused_feedback")
        raise web.HTTPConflict(text=f"action {action} is not this device's: nothing recorded\n")
    d = acts.offered[action].deployment
    if fb.closed:
        acts.done(device_id)
        acts.described.discard(device_id)  # as hawkBit: after an action, ask for its attributes again
    else:
        acts.start(device_id, action)
    if (event := ddi.feedback_event(fb)) is not None:
        app[STATS].inc(f"devices.events.{event}")
        # a result's details are its reason; progress lines (suricatta sends its log) are not kept
        reason = fb.reason() if event != "downloaded" else None
        app[INGEST].on_event(DeviceEvent(device_id, event, d.model_id, d.version, reason))
    return web.Response(status=200)


async def cancel(request: web.Request) -> web.Response:
    app = request.app
    acts = app[DDI]
    device_id, _owner, answer = _ask(request, write=False)
    action = _action(request)
    if acts.to_cancel(device_id, acts.offer(answer)) != action:
        raise web.HTTPNotFound(text=f"no cancellation of action {action} for this device\n")
    return web.json_response(ddi.cancel_document(action), headers={"Cache-Control": "no-store"})


async def cancel_feedback(request: web.Request) -> web.Response:
    app = request.app
    acts = app[DDI]
    device_id, _owner, _answer = _ask(request, write=True)
    action = _action(request)
    fb = await _feedback_body(request, action)
    if acts.in_progress.get(device_id) != action:
        app[STATS].inc("ddi.refused_feedback")
        raise web.HTTPConflict(text=f"no cancellation of action {action} for this device\n")
    if fb.execution == ddi.Execution.REJECTED:
        # it goes on with it (RAUC once installing): asked once, and its result still counts
        acts.refused[device_id] = action
        app[STATS].inc("ddi.cancel_refused")
    elif fb.closed:
        acts.done(device_id)
        app[STATS].inc("ddi.cancelled")
    return web.Response(status=200)


async def config_data(request: web.Request) -> web.Response:
    app = request.app
    acts = app[DDI]
    device_id = device_id_of(request)
    now = app[CLOCK]()
    admit(app[CREDENTIALS], app[STATS], now, request, device_id, True)
    doc = await json_body(request)
    attrs = ddi.parse_config_data(doc)
    if app[INVENTORY].polled(device_id, attrs, now) is not None:
        if len(acts.described) >= acts.max_devices:
            acts.described.clear()
        acts.described.add(device_id)
    return web.Response(status=200)


async def md5sum(request: web.Request) -> web.Response:
    """``md5sum-http``: ``<md5>  <filename>``, as hawkBit serves it."""
    app = request.app
    acts = app[DDI]
    _device_id, _owner, _answer = _ask(request, write=False)
    offer = acts.offered.get(_action(request))
    d = offer.deployment if offer is not None else None
    if d is None or request.match_info["filename"] != d.filename:
        raise web.HTTPNotFound(text="no such artifact\n")
    found = app[STORE].lookup(d.model_id, d.version, d.filename)
    if not isinstance(found, Verified) or found.sha256 != d.sha256:
        raise web.HTTPServiceUnavailable(
            text="the artifact is not held here now\n", headers={"Retry-After": "30"}
        )
    _sha1, md5 = await acts.sums(found)
    return web.Response(text=f"{md5}  {d.filename}\n")


def add_ddi_routes(app: web.Application, settings: Settings) -> None:
    app[DDI] = acts = DdiActions(settings)
    root = f"/{acts.tenant}/controller/v1/{{device_id}}"
    app.router.add_get(root, base)
    app.router.add_get(root + "/deploymentBase/{action}", deployment)
    app.router.add_post(root + "/deploymentBase/{action}/feedback", feedback)
    app.router.add_get(root + "/cancelAction/{action}", cancel)
    app.router.add_post(root + "/cancelAction/{action}/feedback", cancel_feedback)
    app.router.add_put(root + "/configData", config_data)
    app.router.add_get(root + "/softwaremodules/{action}/artifacts/{filename}.MD5SUM", md5sum)

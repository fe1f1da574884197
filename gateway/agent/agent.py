"""The reference A/B update flow of a device, configured only by ``OTA_SERVICE_URL``, its id, its
attributes and the cloud's public key.

One cycle (:meth:`DeviceAgent.update_once`):

1. poll ``GET /devices/<id>/updates`` with its attributes (``fw``, ``hw``, ...) and the model it
   runs (``model_id``, ``model_version``), ``If-None-Match`` on the manifest it already handled, and
   optionally ``?wait=`` (long poll);
2. on a manifest: download into the inactive slot (resumed with ``Range``/``If-Range``), check its
   sha256 and the cloud's signature, switch slots, run the health check, report each step as an
   event (``downloaded``, ``verified``, ``activated``, ``healthy``; ``failed`` or ``rolled_back``);
3. in the gateway's shadow stage (a manifest with ``"shadow": true``): download and verify the
   candidate into the inactive slot, never switch to it, and report its figures on the same frames
   beside the active model's, with their agreement (:mod:`.shadow`);
4. obey the gateway's rollbacks: a manifest with ``"rollback": true`` (the previous stable version:
   switched back to without a download when the other slot holds it), and ``204`` with
   ``X-OTA-Reason: rollback_previous_slot`` (a halted first version: back to the other slot).

:meth:`DeviceAgent.run` repeats it on the gateway's ``Retry-After`` (clamped to at most
``max_poll_interval_s``; or right away after a long poll or an MQTT "poll now"), tells its
``on_wait`` listeners why it waits and when it asks again (:class:`~gateway.agent.poll.Waiting`),
and sends the inference app's metrics every ``metrics_interval_s``. No answer of a gateway stops
it (:mod:`.poll`); a failure it cannot retry ends :meth:`~DeviceAgent.run` with an
:class:`AgentError`, never silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.agent import statement
from gateway.agent.errors import AgentError, VerifyError, problem
from gateway.agent.fetch import fetch_into_slot
from gateway.agent.metrics import HttpLink, MetricsLink, MqttLink
from gateway.agent.poll import (
    MAX_MANIFEST_BYTES,
    MAX_RETRY_S,
    Waiting,
    check_manifest,
    error_text,
    parse_manifest,
    read_bounded,
    retry_after,
    why_no_update,
)
from gateway.agent.shadow import MetricsSource, ShadowSource, reports
from gateway.agent.slots import SlotInfo, Slots
from gateway.agent.transfer import Busy
from gateway.agent.verify import load_public_key
from gateway.core.events import DeviceEvent

log = logging.getLogger(__name__)

# each event the agent reports, as it reports it: what a demo's narrator or a test listens to
Listener = Callable[[DeviceEvent], None]
HealthCheck = Callable[[Path, SlotInfo], Awaitable[bool]]
WaitListener = Callable[[Waiting], None]


async def file_is_there(path: Path, _slot: SlotInfo) -> bool:
    """The default health check: the model file is there and not empty. A real agent starts its
    inference app on the new model and waits for its first good inferences."""
    size = await asyncio.to_thread(lambda: path.stat().st_size if path.exists() else 0)
    return size > 0


@dataclass
class DeviceAgent:
    service_url: str
    device_id: str
    public_key_pem: bytes
    state_dir: Path
    attrs: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    model_id: str | None = None  # the model it asks for before it runs any
    wait_s: float = 0.0  # long poll
    poll_interval_s: float = 60.0  # when the gateway says nothing (no Retry-After)
    max_poll_interval_s: float = MAX_RETRY_S  # the longest Retry-After obeyed
    metrics_interval_s: float = 10.0
    metrics_source: MetricsSource | None = None
    shadow_source: ShadowSource | None = None  # both models on the same frames, in the shadow stage
    mqtt: tuple[str, int] | None = None  # the gateway's broker; None: metrics over HTTP
    health_check: HealthCheck = file_is_there
    listeners: Sequence[Listener] = ()
    on_wait: Sequence[WaitListener] = ()
    events: list[str] = field(default_factory=list)
    etag: str | None = None  # of the manifest it last handled
    require_statement: bool = False  # refuse manifests without a signed statement (gateway.agent.statement)
    _slots: Slots | None = field(default=None, init=False, repr=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    shadowing: SlotInfo | None = field(default=None, init=False)  # the candidate run in shadow

    # -- what it runs ------------------------------------------------------------------------------

    async def slots(self) -> Slots:
        if self._slots is None:
            self._slots = await asyncio.to_thread(Slots.open, self.state_dir)
        return self._slots

    async def running(self) -> SlotInfo | None:
        return await asyncio.to_thread((await self.slots()).current)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # -- the flow ---------------------------------------------------------------------------------

    async def poll(
        self, s: aiohttp.ClientSession, wait_s: float = 0
    ) -> tuple[int, dict[str, Any] | None, Mapping[str, str]]:
        params = dict(self.attrs)
        current = await self.running()
        if current is not None:
            params["model_id"], params["model_version"] = current.model_id, current.version
        elif self.model_id:
            params["model_id"] = self.model_id
        if wait_s:
            params["wait"] = f"{wait_s:g}"
        headers = self._headers()
        if self.etag:
            headers["If-None-Match"] = self.etag
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=wait_s + 30)
        url = f"{self.service_url}/devices/{self.device_id}/updates"
        async with s.get(url, params=params, headers=headers, timeout=timeout) as r:
            if r.status not in (200, 204, 304):
                raise AgentError(f"poll: HTTP {r.status}: {await error_text(r)}")
            body = (
                parse_manifest(await read_bounded(r, MAX_MANIFEST_BYTES, "poll")) if r.status == 200 else None
            )
            return r.status, body, r.headers

    async def update_once(
        self, s: aiohttp.ClientSession, interrupt_after: int | None = None, wait_s: float = 0
    ) -> bool:
        """One poll and what it asks for; True when the active model changed."""
        status, manifest, headers = await self.poll(s, wait_s)
        return await self.handle(s, status, manifest, headers, interrupt_after)

    async def handle(
        self,
        s: aiohttp.ClientSession,
        status: int,
        manifest: dict[str, Any] | None,
        headers: Mapping[str, str],
        interrupt_after: int | None = None,
    ) -> bool:
        if status == 204 and headers.get("X-OTA-Reason") == "rollback_previous_slot":
            return await self._back_to_previous_slot(s)
        if status != 304:  # anything but the same answer ends a shadow run
            self.shadowing = None
        if status != 200 or manifest is None:
            return False
        check_manifest(manifest)
        try:
            if manifest.get("shadow"):
                self.shadowing = await self.shadow(s, manifest)
                self.etag = headers.get("ETag")
                return False
            changed = await self.install(s, manifest, interrupt_after)
        except VerifyError:
            self.etag = headers.get("ETag")  # these bytes are refused: not fetched again
            raise
        self.etag = headers.get("ETag")
        return changed

    async def install(
        self, s: aiohttp.ClientSession, manifest: dict[str, Any], interrupt_after: int | None = None
    ) -> bool:
        slots = await self.slots()
        current, previous = await asyncio.to_thread(lambda: (slots.current(), slots.previous()))
        sha256 = str(manifest["sha256"])
        if current is not None and current.sha256 == sha256:
            return False  # running it already
        await self._judge(s, manifest, current, previous)
        rollback = bool(manifest.get("rollback"))
        if previous is None or previous.sha256 != sha256:
            await self._fetch(s, slots, manifest, interrupt_after)
        elif not rollback:
            await self.event(s, "verified", manifest)  # still in the other slot, checked then
        await asyncio.to_thread(slots.switch)
        if rollback and current is not None:
            why = f"the gateway rolled {current.version} back to {manifest['version']}"
            await self.event(
                s, "rolled_back", {"model_id": current.model_id, "version": current.version}, why
            )
            return True
        await self.event(s, "activated", manifest)
        new = await self.running()
        assert new is not None
        if await self.health_check(slots.model_path(new.name), new):
            await self.event(s, "healthy", manifest)
            return True
        await asyncio.to_thread(slots.switch)  # the new model does not work here: back to the old one
        await self.event(s, "rolled_back", manifest, "the health check failed after activation")
        return False

    async def shadow(self, s: aiohttp.ClientSession, manifest: dict[str, Any]) -> SlotInfo | None:
        """The shadow stage: the candidate into the inactive slot, verified, never made current."""
        slots = await self.slots()
        current, previous = await asyncio.to_thread(lambda: (slots.current(), slots.previous()))
        if current is None or current.sha256 == manifest["sha256"]:
            return None  # no active model to run it beside, or it is the active model already
        await self._judge(s, manifest, current, previous)
        if previous is None or previous.sha256 != manifest["sha256"]:
            await self._fetch(s, slots, manifest, None)
        return await asyncio.to_thread(slots.previous)

    async def _judge(
        self,
        s: aiohttp.ClientSession,
        manifest: dict[str, Any],
        current: SlotInfo | None,
        previous: SlotInfo | None,
    ) -> None:
        """The signed statement binds this model, version, length and sha256 (gateway.agent.statement)."""
        key = load_public_key(self.public_key_pem)
        try:
            statement.check(manifest, key, current, previous, required=self.require_statement)
        except VerifyError as exc:
            await self.event(s, "failed", manifest, str(exc))
            raise

    async def _fetch(
        self, s: aiohttp.ClientSession, slots: Slots, manifest: dict[str, Any], interrupt_after: int | None
    ) -> None:
        await fetch_into_slot(
            s,
            slots,
            manifest,
            headers=self._headers(),
            public_key_pem=self.public_key_pem,
            device_id=self.device_id,
            report=lambda name, reason=None: self.event(s, name, manifest, reason),
            interrupt_after=interrupt_after,
        )

    async def _back_to_previous_slot(self, s: aiohttp.ClientSession) -> bool:
        slots = await self.slots()
        current, previous = await asyncio.to_thread(lambda: (slots.current(), slots.previous()))
        if current is None or previous is None:
            log.warning("%s: told to go back to the previous slot, which holds nothing", self.device_id)
            return False
        await asyncio.to_thread(slots.switch)
        why = f"the gateway halted {current.version}: back to the previous slot ({previous.version})"
        await self.event(s, "rolled_back", {"model_id": current.model_id, "version": current.version}, why)
        self.etag = None
        return True

    async def event(
        self, s: aiohttp.ClientSession, name: str, manifest: Mapping[str, Any], reason: str | None = None
    ) -> int:
        """Report one step (``POST /devices/<id>/events``); a lost report is logged, not fatal."""
        body = {"event": name, "model_id": manifest["model_id"], "version": manifest["version"]}
        if reason:
            body["reason"] = reason
        self.events.append(name)
        for listener in self.listeners:
            listener(DeviceEvent(self.device_id, name, body["model_id"], body["version"], reason))
        url = f"{self.service_url}/devices/{self.device_id}/events"
        try:
            async with s.post(url, json=body, headers=self._headers()) as r:
                return r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s: event %s not sent: %s", self.device_id, name, exc)
            return 0

    # -- the loop -----------------------------------------------------------------------------------

    def poll_now(self, _notice: Mapping[str, Any] | None = None) -> None:
        """The gateway's MQTT notice (or anyone) asks for a poll before the interval ends."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and report until ``stop`` is set."""
        async with aiohttp.ClientSession() as s:
            link: MetricsLink = HttpLink(s, self.service_url, self.device_id, self._headers())
            if self.mqtt is not None:
                link = MqttLink(*self.mqtt, self.device_id, token=self.token, on_notice=self.poll_now)
            await link.start()
            jobs = [
                asyncio.create_task(self._report(s, link, stop), name=f"{self.device_id} metrics"),
                asyncio.create_task(self._poll_loop(s, stop), name=f"{self.device_id} polls"),
                asyncio.create_task(stop.wait()),
            ]
            try:  # a long poll or a download in flight is cut short on stop (a partial resumes)
                done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                await link.close()
            for job in done:  # a loop that ended on an error it could not retry: never a quiet exit
                if not job.cancelled() and (exc := job.exception()) is not None:
                    raise AgentError(f"{job.get_name()} stopped: {exc!r}") from exc

    async def cycle(self, s: aiohttp.ClientSession) -> Waiting:
        """One poll and what it asks for; what it waits for now and how long (the gateway's
        ``Retry-After``, clamped). Errors are the caller's to report and retry."""
        status, manifest, headers = await self.poll(s, self.wait_s)
        changed = await self.handle(s, status, manifest, headers)
        delay_s = retry_after(headers, self.poll_interval_s, max_s=self.max_poll_interval_s)
        if changed or self.wait_s:
            delay_s = random.uniform(0.0, 1.0)  # a long poll asks again soon (jittered)
        return self._waiting(why_no_update(status, headers, changed), delay_s)

    def _waiting(self, why: str, delay_s: float, failed: bool = False) -> Waiting:
        return Waiting(self.device_id, why, delay_s, time.time() + delay_s, failed)

    def tell(self, waiting: Waiting) -> None:
        """Say why it waits and when it asks again: a failure as a warning, the rest to listeners."""
        if waiting.failed:
            log.warning("%s", waiting.text())
        else:
            log.debug("%s", waiting.text())
        for listener in self.on_wait:
            listener(waiting)

    async def _poll_loop(self, s: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        backoff_s = 1.0
        while not stop.is_set():
            try:
                waiting = await self.cycle(s)
                backoff_s = 1.0
            except Busy as exc:
                waiting = self._waiting(str(exc), min(exc.retry_after_s, self.max_poll_interval_s))
            except (AgentError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                delay_s, backoff_s = backoff_s * random.uniform(0.5, 1.5), min(backoff_s * 2, 60.0)
                waiting = self._waiting(problem(exc), delay_s, failed=True)
            self.tell(waiting)
            await self._sleep(waiting.delay_s, stop)

    async def _sleep(self, delay_s: float, stop: asyncio.Event) -> None:
        self._wake.clear()
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _report(self, s: aiohttp.ClientSession, link: MetricsLink, stop: asyncio.Event) -> None:
        """The inference app's figures for the model it runs, every ``metrics_interval_s``; over HTTP
        when the MQTT link cannot take them."""
        fallback = HttpLink(s, self.service_url, self.device_id, self._headers())
        while not stop.is_set():
            await asyncio.sleep(self.metrics_interval_s * random.uniform(0.8, 1.2))
            current = await self.running()
            for doc in reports(
                self.device_id, current, self.shadowing, self.metrics_source, self.shadow_source
            ):
                if not await link.send(doc) and link is not fallback:
                    await fallback.send(doc)

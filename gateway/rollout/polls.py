"""The poll answer: what a device may install now, and the manifest body that says so.

:class:`PollAnswers` reads, from memory only, the index in effect as the gate keeper published it
(every deployment in it judged and durable), the device's inventory record, the clock it is given and
which blobs are verified, and hands them to the pure :func:`gateway.core.policy.answer` through
:class:`gateway.core.poll_memo.PollMemo`, which gives a device its previous answer again while none
of those inputs changed. The site's gates are asked of that published value by the core itself
(:mod:`gateway.core.site_state`): no shell object is handed into the core. It also renders the
answer's manifest and ETag, memoised: the same few answers go to thousands of devices.

It leaves to others: parsing the request, credentials, long polls and headers (``gateway.http``);
what is in effect and when (``gateway.rollout`` and the site loop); the decision itself
(``gateway.core.policy``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from firmware_compat.matrix import CompatMatrix
from gateway.core import policy
from gateway.core.device import DeviceRecord
from gateway.core.manifest import Deployment
from gateway.core.poll_memo import PollMemo
from gateway.inventory.store import Inventory
from gateway.rollout.keeper import GateKeeper
from gateway.store.artifacts import ArtifactStore
from gateway.trust.state import TrustState

RENDER_CACHE_MAX = 256
UNKNOWN_DEVICE = policy.PollAnswer(None, "unknown_device")  # one object: the reply is kept by identity


class PollAnswers:
    def __init__(
        self,
        *,
        inventory: Inventory,
        gates: GateKeeper,
        trust: TrustState,
        store: ArtifactStore,
        matrix: CompatMatrix | None,
        admit_on_poll: Callable[[DeviceRecord, Deployment, float], Awaitable[bool]] | None = None,
    ) -> None:
        self.inventory = inventory
        self.admit_on_poll = admit_on_poll
        self.gates = gates
        self.trust = trust
        self.store = store
        self.matrix = matrix
        self.render_cache: dict[Any, tuple[Deployment, tuple[bytes, str]]] = {}
        self.memo = PollMemo()
        self._verified = store.is_verified  # one bound method, not one per poll

    def answer(self, device: DeviceRecord | None, system_now: float) -> policy.PollAnswer:
        """What the device of this inventory record may install at ``system_now`` (the system
        clock; judged against the trusted floor here), see :mod:`gateway.core.policy`. The caller
        hands in the record it holds (the poll just touched it): no second inventory lookup."""
        if device is None:
            return UNKNOWN_DEVICE
        site = self.gates.site  # the index in effect: every deployment in it judged
        now, trusted = self.trust.now(system_now)
        return self.memo.answer(site, device, now, trusted, self._verified, self.matrix)

    async def answer_asking(self, device: DeviceRecord | None, system_now: float) -> policy.PollAnswer:
        """:meth:`answer` for a device that asks (its own poll): told ``waiting_for_wave`` while its
        wave has a free place, it is admitted in a durable step first (the gate keeper's), then
        answered, so the first device at a new site gets its first model on its first poll."""
        answer = self.answer(device, system_now)
        if answer.waiting_for is None or device is None or self.admit_on_poll is None:
            return answer
        if not await self.admit_on_poll(device, answer.waiting_for, system_now):
            return answer  # nothing changed: the answer stands (the usual poll of a full wave)
        return self.answer(device, system_now)

    def render(self, answer: policy.PollAnswer, base: str) -> tuple[bytes, str] | None:
        """The manifest body and its ETag, its URLs under ``base``; memoised per (deployment, base
        URL, rollback, shadow)."""
        d = answer.deployment
        if d is None:
            return None
        # Keyed by the deployment's identity (hashing a manifest's every field cost more than the
        # lookup); the entry holds the deployment, so its id is not reused while it is cached.
        key = (id(d), base, answer.rollback, answer.shadow)
        cache = self.render_cache
        if (hit := cache.get(key)) is not None and hit[0] is d:
            return hit[1]
        url = f"{base}/artifacts/{d.model_id}/{d.version}/{d.filename}"
        body = d.to_device(url, url + ".sig")
        if answer.rollback:
            body["rollback"] = True
        if answer.shadow:
            body["shadow"] = True
        raw = json.dumps(body, sort_keys=True).encode()
        rendered = raw, '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
        if len(cache) >= RENDER_CACHE_MAX:
            cache.clear()
        cache[key] = (d, rendered)
        return rendered

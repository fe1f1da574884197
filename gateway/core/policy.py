"""The answer to one device's poll, as pure logic: the cloud's rules, then the site's gates.

Order of the checks, each able only to narrow what the previous allowed:

1. the signed index: deployments in effect; a signed coordinator command ``paused`` or ``aborted``
   stops a deployment being offered to any device not already on it;
2. the clock: when the gateway's clock is not trusted (see :mod:`gateway.trust.clock`), no deployment
   that has a time window is offered, so a wrong clock can never widen a window;
3. eligibility (:mod:`gateway.core.eligibility`): cohort, percentage, window, firmware, and the
   newest allowed version among several;
4. the mirror: an artifact not yet verified here is not offered (204 ``not_mirrored``);
5. the site's canary gates (:mod:`gateway.core.site`): the device must be in an open wave of a
   judged deployment (one not judged yet is ``waiting_for_wave``: fail closed); after a halt,
   devices of the failed wave are offered the previous stable version (``rollback``), or, for a
   model's first version, told to go back to their previous slot (204 ``rollback_previous_slot``).

Values and ``now`` in, a :class:`PollAnswer` out; the HTTP shell renders it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from firmware_compat.matrix import CompatMatrix
from gateway.core.device import DeviceRecord
from gateway.core.eligibility import decide
from gateway.core.manifest import Deployment
from gateway.core.site_state import Rollback


@dataclass(frozen=True)
class PollAnswer:
    deployment: Deployment | None
    reason: str  # short code, sent as X-OTA-Reason
    detail: str = ""
    blocked_by_firmware: str | None = None
    rollback: bool = False  # the offer is the previous stable version after a halt
    shadow: bool = False  # run it in shadow beside the active model (the gate's shadow stage)
    waiting_for: Deployment | None = None  # with waiting_for_wave: the candidate it waits for


class SiteGates(Protocol):
    def rollback_for(self, device: DeviceRecord, now: float) -> Rollback | None:
        """Where this device goes back to when it runs a halted candidate, else None."""

    def admit(self, candidate: Deployment, device: DeviceRecord, now: float) -> str | None:
        """None when the device is in an open wave; "shadow" in the shadow stage; else why it waits."""


def command_for(commands: Mapping[str, str], d: Deployment) -> str | None:
    """A signed coordinator command naming ``model@version`` or the whole ``model``."""
    return commands.get(f"{d.model_id}@{d.version}") or commands.get(d.model_id)


def answer(
    *,
    deployments: Sequence[Deployment],
    commands: Mapping[str, str],
    device: DeviceRecord,
    now: float,
    clock_trusted: bool,
    verified: Callable[[str], bool],
    matrix: CompatMatrix | None = None,
    gates: SiteGates | None = None,
) -> PollAnswer:
    if gates is not None and (back := gates.rollback_for(device, now)) is not None:
        if back.to is None:
            return PollAnswer(
                None,
                "rollback_previous_slot",
                f"{back.model_id}@{back.version} halted at this site: switch back to your previous slot",
                rollback=True,
            )
        if not verified(back.to.sha256):
            return PollAnswer(None, "rollback_not_available", "previous stable artifact not held here")
        to = back.to
        return PollAnswer(to, "rollback", f"{to.model_id}@{to.version} after a halt", rollback=True)
    offered = [
        d
        for d in deployments
        if command_for(commands, d) is None
        and (clock_trusted or (d.start_time is None and d.end_time is None))
    ]
    if not offered and deployments:
        held = [d for d in deployments if command_for(commands, d) is not None]
        if held:
            return PollAnswer(None, "held_by_cloud", f"coordinator command {command_for(commands, held[0])}")
        return PollAnswer(None, "clock_untrusted", "the gateway clock is wrong: no time-windowed deployment")
    decision = decide(offered, device, now, matrix)
    candidate = decision.deployment
    if candidate is None:
        return PollAnswer(None, decision.reason, decision.detail, decision.blocked_by_firmware)
    shadow = False
    if gates is not None and (waiting := gates.admit(candidate, device, now)) is not None:
        if waiting != "shadow":
            return PollAnswer(None, waiting, "", decision.blocked_by_firmware, waiting_for=candidate)
        shadow = True
    if not verified(candidate.sha256):
        return PollAnswer(
            None, "not_mirrored", f"{candidate.model_id}@{candidate.version} is still being mirrored"
        )
    if shadow:
        return PollAnswer(
            candidate, "shadow", "run beside the active model; report with shadow=true", shadow=True
        )
    return PollAnswer(candidate, decision.reason, decision.detail, decision.blocked_by_firmware)

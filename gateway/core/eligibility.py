"""Which deployment, if any, one device may install: the cloud's rules, as pure logic.

Per deployment, in this order (the first that fails is the reason):

1. ``target_cohort`` matches the device's attributes (:mod:`gateway.core.cohort`); an expression
   that does not parse rejects that deployment only (``bad_cohort``; :func:`parse_ok` says why, for
   the shell to log when an index comes into effect), never the whole list;
2. the model: a device that reports its ``model_id`` only gets deployments of that model;
3. ``rollout_percentage`` by the deterministic bucket of (deployment, device) (:mod:`.bucket`);
4. the window ``[start_time, end_time)`` against ``now``: the gateway's trusted time, never the
   device's clock (which the gateway does not even read), so a device clock cannot widen it.

Then firmware, through :mod:`firmware_compat`: among the deployments left for a model, the newest
version the device's firmware supports wins (precedence: newest allowed version); a newer one that
needs newer firmware marks the device *blocked by firmware*. A deployment with a firmware range or
a matrix row is not offered to a device whose firmware is unknown. A device already on the winning
version, or on a newer one, is ``up_to_date`` (rollbacks are the gates' business, not this module's).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from firmware_compat.choose import Offer, choose
from firmware_compat.matrix import CompatMatrix
from firmware_compat.ranges import FirmwareRange
from firmware_compat.version import Version, VersionError, parse_version, try_version
from gateway.core.bucket import in_rollout
from gateway.core.cohort import CohortSyntaxError, Expr, parse_cohort
from gateway.core.device import DeviceRecord
from gateway.core.manifest import Deployment


@dataclass(frozen=True)
class Eligibility:
    deployment: Deployment | None
    reason: str  # eligible, up_to_date, not_in_cohort, other_model, not_in_rollout, before_window,
    # after_window, firmware_too_old, firmware_too_new, firmware_unknown, bad_cohort, no_deployment
    detail: str = ""
    blocked_by_firmware: str | None = None


@functools.lru_cache(maxsize=1024)
def _cohort(text: str) -> Expr | CohortSyntaxError:
    try:
        return parse_cohort(text)
    except CohortSyntaxError as exc:  # a value, not a log line: the shell says it (``parse_ok``)
        return exc


@functools.lru_cache(maxsize=1024)
def _ranges(min_fw: str | None, max_fw: str | None, version: str) -> tuple[FirmwareRange, Version] | str:
    try:
        return FirmwareRange.parse(min_fw, max_fw), parse_version(version)
    except VersionError as exc:
        return str(exc)


def parse_ok(d: Deployment) -> str | None:
    """Why a deployment can never be offered (a bad cohort or version), or None. For index load."""
    c = _cohort(d.target_cohort)
    if isinstance(c, CohortSyntaxError):
        return f"target_cohort: {c}"
    r = _ranges(d.min_firmware, d.max_firmware, d.version)
    return f"version or firmware range: {r}" if isinstance(r, str) else None


def window_edges(deployments: Iterable[Deployment]) -> tuple[float, ...]:
    """Every instant at which a comparison of ``now`` with a deployment's window can change (the
    memos' slots: between two edges :func:`decide` reads ``now`` the same way)."""
    return tuple(sorted({t for d in deployments for t in (d.start_time, d.end_time) if t is not None}))


def _rule_out(d: Deployment, device: DeviceRecord, now: float) -> tuple[str, str] | None:
    """The first of the cloud's rules that excludes ``d`` for this device, or None."""
    cohort = _cohort(d.target_cohort)
    if isinstance(cohort, CohortSyntaxError):
        return "bad_cohort", str(cohort)
    if not cohort.matches(_cohort_attrs(device)):
        return "not_in_cohort", f"target_cohort {d.target_cohort!r}"
    if device.model_id and device.model_id != d.model_id:
        return "other_model", f"device runs {device.model_id}"
    if not in_rollout(d.rollout_percentage, d.key, device.device_id):
        return "not_in_rollout", f"{d.rollout_percentage:g}% rollout"
    if d.start_time is not None and now < d.start_time:
        return "before_window", "the deployment's start_time is ahead"
    if d.end_time is not None and now >= d.end_time:
        return "after_window", "the deployment's end_time has passed"
    return None


def _cohort_attrs(device: DeviceRecord) -> dict[str, str]:
    """What a cohort term can name: the device's attributes, plus its id, model and version."""
    known = {
        "device_id": device.device_id,
        "model_id": device.model_id,
        "model_version": device.model_version,
    }
    return {**{k: v for k, v in known.items() if v is not None}, **device.attrs}


def decide(
    deployments: Sequence[Deployment], device: DeviceRecord, now: float, matrix: CompatMatrix | None = None
) -> Eligibility:
    if not deployments:
        return Eligibility(None, "no_deployment", "no deployment in effect for this site")
    open_: list[Deployment] = []
    first_reason: tuple[str, str] | None = None
    for d in sorted(deployments, key=lambda d: _version_key(d.version), reverse=True):
        why = _rule_out(d, device, now)
        if why is None:
            open_.append(d)
        elif first_reason is None:
            first_reason = why  # the newest deployment's reason is the most useful one to show
    if not open_:
        assert first_reason is not None
        return Eligibility(None, *first_reason)

    firmware = try_version(device.attrs.get("fw"))
    offers: dict[str, list[Offer[Deployment]]] = {}
    for d in open_:
        parsed = _ranges(d.min_firmware, d.max_firmware, d.version)
        if isinstance(parsed, str):
            continue
        rng, version = parsed
        constrained = (
            rng.min is not None or rng.max is not None or (matrix is not None and d.model_id in matrix.rows)
        )
        if firmware is None and constrained:
            if first_reason is None:
                first_reason = ("firmware_unknown", "this deployment has a firmware range; send fw=")
            continue
        offers.setdefault(d.model_id, []).append(Offer(version, rng, d))
    if not offers:
        return Eligibility(None, *(first_reason or ("firmware_unknown", "")))

    # Several models open to one device that did not say which it runs: the first model by id, for a
    # stable answer (sites normally run one model per device class, routed by cohort).
    model_id = sorted(offers)[0] if not device.model_id else device.model_id
    choice = choose(
        offers.get(model_id, []), firmware or Version((0, 0, 0)), model_id=model_id, matrix=matrix
    )
    blocked = str(choice.blocked_by.version) if choice.blocked_by is not None else None
    if choice.chosen is None:
        reason = "firmware_too_new" if choice.too_new else "firmware_too_old"
        return Eligibility(None, reason, f"firmware {device.attrs.get('fw')}", blocked)
    current = try_version(device.model_version) if device.model_id in (None, model_id) else None
    if current is not None and current >= choice.chosen.version:
        return Eligibility(None, "up_to_date", f"on {device.model_version}", blocked)
    return Eligibility(choice.chosen.item, "eligible", "", blocked)


def _version_key(text: str) -> tuple[object, ...]:
    v = try_version(text)
    return (1, v.sort_key()) if v is not None else (0, ())

"""The poll answer (:mod:`gateway.core.policy`), table-driven: every reason code, and which wins
when several hold at once. Precedence, highest first:

rollback (and its two 204 forms) > held_by_cloud > clock_untrusted > the eligibility reasons >
waiting_for_wave / halted_at_site > not_mirrored > shadow > eligible.

The site's gates are a small in-memory twin of the :class:`~gateway.core.policy.SiteGates`
protocol (the real one, :mod:`gateway.core.site`, is tested in tests/rollout/); it records what it
was asked, so the tests also see that a narrower check is not even consulted once a wider one said no.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from firmware_compat import CompatMatrix
from gateway.core.device import DeviceRecord
from gateway.core.manifest import Deployment, parse_deployment
from gateway.core.policy import PollAnswer, answer, command_for
from gateway.core.site import HALTED, WAITING, Rollback

NOW = 1_790_000_000.0
CANDIDATE_SHA = "c" * 64
STABLE_SHA = "b" * 64


def dep(version: str = "2.0.0", sha: str = CANDIDATE_SHA, **kw: Any) -> Deployment:
    doc = {
        "model_id": "detector",
        "version": version,
        "artifact_url": f"artifacts/detector/{version}/m.bin",
        "signature_url": f"artifacts/detector/{version}/m.bin.sig",
        "sha256": sha,
        "length": 10,
        **kw,
    }
    return parse_deployment(doc)


STABLE = dep("1.0.0", STABLE_SHA)
DEVICE = DeviceRecord(
    "cam-1", attrs={"hw": "rev1", "fw": "2.0.0"}, model_id="detector", model_version="1.0.0"
)


@dataclass
class Gates:
    """The site's gates as values: what ``rollback_for`` and ``admit`` answer, and who asked."""

    back: Rollback | None = None
    waiting: str | None = None  # None: admitted; "shadow"; or why the device waits
    asked: list[str] = field(default_factory=list)

    def rollback_for(self, device: DeviceRecord, now: float) -> Rollback | None:
        self.asked.append("rollback_for")
        return self.back

    def admit(self, candidate: Deployment, device: DeviceRecord, now: float) -> str | None:
        self.asked.append("admit")
        return self.waiting


@dataclass(frozen=True)
class Case:
    """Which conditions hold; each is the cause of one reason code."""

    rollback: str | None = None  # "to": a verified stable version, "slot", "unavailable"
    held: bool = False  # a signed coordinator command pauses the model
    clock_untrusted: bool = False  # the deployment has a time window and the clock is not trusted
    ineligible: str | None = None  # an eligibility reason the deployment is given
    waiting: str | None = None  # what the gate says: WAITING, HALTED or "shadow"
    unmirrored: bool = False  # the candidate's artifact is not verified here


INELIGIBLE: dict[str, dict[str, Any]] = {
    # how to make the one deployment fail each of the cloud's rules for DEVICE
    "not_in_cohort": {"target_cohort": "hw:rev9"},
    "not_in_rollout": {"rollout_percentage": 0},
    "firmware_too_old": {"compatibility": {"min_firmware": "3.0.0"}},
    "firmware_too_new": {"compatibility": {"max_firmware": "1.0.0"}},
}


def run(case: Case) -> tuple[PollAnswer, Gates]:
    candidate = dep(**INELIGIBLE[case.ineligible]) if case.ineligible else dep()
    if case.clock_untrusted:  # a window that is open now: only the clock's trust can close it
        candidate = dataclasses.replace(candidate, start_time=NOW - 3600, end_time=NOW + 3600)
    back = {
        None: None,
        "to": Rollback("detector", "2.0.0", STABLE),
        "slot": Rollback("detector", "2.0.0", None),
        "unavailable": Rollback("detector", "2.0.0", dep("1.0.0", "d" * 64)),
    }[case.rollback]
    gates = Gates(back=back, waiting=case.waiting)
    held = {STABLE_SHA} | (set() if case.unmirrored else {CANDIDATE_SHA})
    got = answer(
        deployments=[candidate],
        commands={"detector": "paused"} if case.held else {},
        device=DEVICE,
        now=NOW,
        clock_trusted=not case.clock_untrusted,
        verified=held.__contains__,
        gates=gates,
    )
    return got, gates


# Highest first: the reason each condition gives when it is the strongest one present.
PRECEDENCE: list[tuple[str, Case, str]] = [
    ("rollback", Case(rollback="to"), "rollback"),
    ("rollback_previous_slot", Case(rollback="slot"), "rollback_previous_slot"),
    ("rollback_not_available", Case(rollback="unavailable"), "rollback_not_available"),
    ("held", Case(held=True), "held_by_cloud"),
    ("clock", Case(clock_untrusted=True), "clock_untrusted"),
    *[(r, Case(ineligible=r), r) for r in INELIGIBLE],
    ("waiting", Case(waiting=WAITING), WAITING),
    ("halted", Case(waiting=HALTED), HALTED),
    ("unmirrored", Case(unmirrored=True), "not_mirrored"),
    ("shadow", Case(waiting="shadow"), "shadow"),
]


def combine(a: Case, b: Case) -> Case:
    """Both cases' conditions at once (where both set the same knob, ``a`` wins)."""
    return Case(
        **{
            f.name: getattr(a, f.name) if getattr(a, f.name) not in (None, False) else getattr(b, f.name)
            for f in dataclasses.fields(Case)
        }
    )


def test_with_no_condition_the_candidate_is_offered() -> None:
    got, gates = run(Case())
    assert got.reason == "eligible"
    assert got.deployment == dep()
    assert not got.rollback
    assert not got.shadow
    assert gates.asked == ["rollback_for", "admit"]


@pytest.mark.parametrize(("name", "case", "reason"), PRECEDENCE, ids=[p[0] for p in PRECEDENCE])
def test_each_reason_alone(name: str, case: Case, reason: str) -> None:
    got, _ = run(case)
    assert got.reason == reason
    assert got.rollback is (name in ("rollback", "rollback_previous_slot"))
    assert got.shadow is (name == "shadow")
    if reason == "rollback":
        assert got.deployment == STABLE
    elif reason == "shadow":
        assert got.deployment == dep()
    else:
        assert got.deployment is None


PAIRS = [
    (hi, lo)
    for (i, hi), (j, lo) in itertools.product(enumerate(PRECEDENCE), repeat=2)
    # two rollback forms, two eligibility reasons or two gate answers cannot hold at once
    if i < j
    and {hi[0], lo[0]} & {"rollback", "rollback_previous_slot", "rollback_not_available"} != {hi[0], lo[0]}
    and not (hi[1].ineligible and lo[1].ineligible)
    and not (hi[1].waiting and lo[1].waiting)
]


@pytest.mark.parametrize(("hi", "lo"), PAIRS, ids=[f"{hi[0]}-beats-{lo[0]}" for hi, lo in PAIRS])
def test_the_stronger_reason_wins(hi: tuple[str, Case, str], lo: tuple[str, Case, str]) -> None:
    got, _ = run(combine(hi[1], lo[1]))
    assert got.reason == hi[2]


def test_every_condition_at_once_is_a_rollback_and_asks_nothing_more() -> None:
    everything = Case(
        rollback="to",
        held=True,
        clock_untrusted=True,
        ineligible="not_in_cohort",
        waiting=HALTED,
        unmirrored=True,
    )
    got, gates = run(everything)
    assert got.reason == "rollback"
    assert gates.asked == ["rollback_for"]


@pytest.mark.parametrize(
    "case", [Case(held=True), Case(clock_untrusted=True), Case(ineligible="not_in_cohort")]
)
def test_the_gates_are_not_asked_to_admit_what_the_cloud_ruled_out(case: Case) -> None:
    _, gates = run(case)
    assert gates.asked == ["rollback_for"]


# -- the cloud's rules in detail ---------------------------------------------------------------------


def ask(deployments: list[Deployment], **kw: Any) -> PollAnswer:
    """The answer for DEVICE at NOW; by default no commands, a trusted clock, everything mirrored."""
    kw = {"commands": {}, "clock_trusted": True, "verified": lambda _sha: True, **kw}
    return answer(deployments=deployments, device=kw.pop("device", DEVICE), now=NOW, **kw)


def test_a_command_naming_one_version_holds_only_that_version() -> None:
    older = dep("1.5.0", "e" * 64)
    commands = {"detector@2.0.0": "paused"}
    assert command_for(commands, dep()) == "paused"
    assert command_for(commands, older) is None
    got = ask([dep(), older], commands=commands)
    assert got.reason == "eligible"
    assert got.deployment == older


def test_an_untrusted_clock_leaves_deployments_without_a_window_on_offer() -> None:
    windowed = dataclasses.replace(dep("3.0.0", "f" * 64), start_time=NOW - 10, end_time=None)
    got = ask([windowed, dep()], clock_trusted=False)
    assert got.reason == "eligible"
    assert got.deployment == dep()


def test_held_is_named_before_the_clock_when_both_empty_the_list() -> None:
    windowed = dataclasses.replace(dep("3.0.0", "f" * 64), start_time=NOW - 10, end_time=None)
    got = ask([windowed, dep()], commands={"detector@2.0.0": "aborted"}, clock_trusted=False)
    assert got.reason == "held_by_cloud"
    assert got.detail == "coordinator command aborted"


@pytest.mark.parametrize(
    ("deployments", "device", "matrix", "reason"),
    [
        ([], DEVICE, None, "no_deployment"),
        ([dep(target_cohort="hw:rev9")], DEVICE, None, "not_in_cohort"),
        ([dep(model_id="counter")], DEVICE, None, "other_model"),
        ([dep(rollout_percentage=0)], DEVICE, None, "not_in_rollout"),
        ([dataclasses.replace(dep(), start_time=NOW + 1)], DEVICE, None, "before_window"),
        ([dataclasses.replace(dep(), end_time=NOW)], DEVICE, None, "after_window"),
        ([dep(compatibility={"min_firmware": "3.0.0"})], DEVICE, None, "firmware_too_old"),
        ([dep(compatibility={"max_firmware": "1.0.0"})], DEVICE, None, "firmware_too_new"),
        (
            [dep(compatibility={"min_firmware": "1.0.0"})],
            dataclasses.replace(DEVICE, attrs={"hw": "rev1"}),
            None,
            "firmware_unknown",
        ),
        (
            [dep()],
            DEVICE,
            CompatMatrix.from_json({"models": {"detector": {"2.0.0": ["9.0.0"]}}}),
            "firmware_too_old",
        ),
        ([dep("1.0.0")], DEVICE, None, "up_to_date"),
    ],
)
def test_each_eligibility_reason_is_the_answer(
    deployments: list[Deployment], device: DeviceRecord, matrix: CompatMatrix | None, reason: str
) -> None:
    gates = Gates()
    got = ask(deployments, device=device, matrix=matrix, gates=gates)
    assert got.reason == reason
    assert got.deployment is None
    assert "admit" not in gates.asked


def test_blocked_by_firmware_is_told_even_while_waiting_for_a_wave() -> None:
    newer = dep("3.0.0", "f" * 64, compatibility={"min_firmware": "9.0.0"})
    got = ask([newer, dep()], gates=Gates(waiting=WAITING))
    assert got.reason == WAITING
    assert got.blocked_by_firmware == "3.0.0"


def test_without_gates_the_cloud_and_the_mirror_decide() -> None:
    assert ask([dep()]).reason == "eligible"
    assert ask([dep()], verified=lambda _sha: False).reason == "not_mirrored"

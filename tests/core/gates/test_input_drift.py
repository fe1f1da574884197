"""The ``input_drift`` row: the drift watch's alert on an input feature of the gate's model, judged
while the gate is open, on a site of unlike devices (a bad camera in half the seeds, a night and day
swing). Worse when an alert was raised since the gate opened, no worse when the model's features are
judged and none alerts (or its alert predates the gate), left out when the model reports none (it
never holds a wave). Dry run by default: recorded with its evidence, never halting; with
``dry_run = []`` it halts. The alert itself comes from the real tracker
(:class:`gateway.core.drift.DriftTracker`) in the last test."""

from __future__ import annotations

import dataclasses
import random

import pytest

from gateway.core.drift import DriftTracker
from gateway.core.drift_settings import DriftSettings
from gateway.core.drift_sketch import DriftSketch
from gateway.core.errors import FormatError
from gateway.core.gates import Action, GateLimits, InputDrift, Stage, evaluate
from gateway.core.gates.sequential import Answer
from gateway.core.gates.values import FeatureDrift
from gateway.core.gates.words import say
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from tests.core.gates.helpers import MODEL, WINDOW_S, Fleet, drive, opened, same, unlike_devices, verdict

SITE = GateSettings(min_devices_per_wave=2, soak_min_s=300.0, min_samples=4)
HEALTH = HealthChecks(max_cpu_percent=80, warmup_inferences=10)
SEEDS = (41, 42, 43)
OPENED_AT = 0.0


def _site(seed: int) -> Fleet:
    return Fleet(unlike_devices(12, seed, bad_camera=seed % 2 == 1), seed, swing_period_s=7200.0)


def _limits(settings: GateSettings, *features: FeatureDrift, model: str = MODEL) -> GateLimits:
    return GateLimits.of(HEALTH, settings).with_drift(InputDrift(0.1, {model: features}), MODEL)


CALM = FeatureDrift("pc1", 0.04, "past")
ALERT = FeatureDrift("brightness", 0.31, "past", raised_at=OPENED_AT + 3 * WINDOW_S)


def test_dry_run_names_input_drift_by_default() -> None:
    assert GateSettings().dry_run == ("input_drift",)


@pytest.mark.parametrize("seed", SEEDS)
def test_an_alert_raised_while_the_gate_is_open_is_worse_recorded_and_never_halts(seed: int) -> None:
    site = _site(seed)
    state = opened(site, SITE, now=OPENED_AT)
    limits = _limits(SITE, ALERT, CALM)
    state, made = drive(state, site, limits, same, windows=SITE.min_samples + 2)
    assert state.stage == Stage.WAVES
    observed = [d for d in made if d.action == Action.OBSERVE]
    assert len(observed) == 1  # once per wave
    assert (
        observed[0].reason
        == "dry run: would have halted on input drift 'brightness' (input_drift:brightness)"
    )
    v = verdict(observed[0], "input_drift:brightness")
    assert v.dry_run and v.result == Answer.WORSE
    assert (v.candidate, v.limit, v.note) == (0.31, 0.1, "against the site's past")
    assert say(v) == "input drift 'brightness': PSI 0.31 against the site's past, alert at 0.1: worse"
    calm = [x for x in evaluate(state, limits) if x.criterion == "input_drift:pc1"]
    assert calm and calm[0].result == Answer.NO_WORSE and calm[0].dry_run


@pytest.mark.parametrize("seed", SEEDS)
def test_taken_out_of_dry_run_an_alert_halts(seed: int) -> None:
    settings = dataclasses.replace(SITE, dry_run=())
    site = _site(seed)
    state = opened(site, settings, now=OPENED_AT)
    state, made = drive(state, site, _limits(settings, ALERT, CALM), same, windows=3)
    assert state.stage == Stage.HALTED
    assert made[-1].action == Action.HALT and "input_drift:brightness" in made[-1].reason
    assert not verdict(made[-1], "input_drift:brightness").dry_run


@pytest.mark.parametrize("seed", SEEDS)
def test_features_judged_and_none_alerting_are_no_worse_and_a_good_candidate_advances(seed: int) -> None:
    settings = dataclasses.replace(SITE, dry_run=())  # halting: still no halt, no hold
    site = _site(seed)
    state = opened(site, settings, now=100.0)
    before = FeatureDrift("brightness", 0.2, "reference", raised_at=50.0)  # the site's, not the candidate's
    limits = _limits(settings, before, CALM)
    state, made = drive(state, site, limits, same, windows=40, until=lambda s: s.wave >= 1)
    assert state.stage == Stage.WAVES and state.wave >= 1, [d.reason for d in made]
    answers = {v.criterion: v for v in evaluate(state, limits)}
    assert answers["input_drift:pc1"].result == Answer.NO_WORSE
    old = answers["input_drift:brightness"]
    assert old.result == Answer.NO_WORSE and old.note.endswith("alert raised before the gate opened")
    assert say(old).startswith("input drift 'brightness': PSI 0.20 against the manifest's reference;")


@pytest.mark.parametrize("seed", SEEDS)
def test_a_model_with_no_drift_features_leaves_the_row_out(seed: int) -> None:
    settings = dataclasses.replace(SITE, dry_run=())
    site = _site(seed)
    for limits in (
        GateLimits.of(HEALTH, settings),  # no drift watch (gate replay)
        _limits(settings),  # a drift watch, nothing judged for this model
        _limits(settings, ALERT, model="other-model"),  # another model's alert is not this gate's
    ):
        state = opened(site, settings, now=OPENED_AT)
        state, made = drive(state, site, limits, same, windows=40, until=lambda s: s.wave >= 1)
        assert state.wave >= 1, [d.reason for d in made]  # never held for it
        assert not [v for d in made for v in d.verdicts if v.criterion.startswith("input_drift")]


def _sketch(rng: random.Random, mean: float, n: int) -> DriftSketch:
    sk = DriftSketch()
    for _ in range(n):
        sk.add(120.0 + 25.0 * rng.gauss(mean, 1.0))
    return sk


@pytest.mark.parametrize("seed", SEEDS)
def test_the_trackers_view_carries_the_alert_and_when_it_was_raised(seed: int) -> None:
    """The real tracker: its alert (against the reference here, two windows in a row) reaches the
    gates with the instant it was raised, and a restart keeps that instant."""
    rng = random.Random(seed)
    s = DriftSettings(window_s=60.0, alert_windows=2, alert_on_reference=True)
    tracker = DriftTracker(s)
    refs = {(MODEL, "brightness"): _sketch(rng, 0.0, 5000)}
    shift_at = 60.0 * rng.randint(3, 6)
    t, raised = 0.0, None
    while raised is None and t < 1200.0:
        tracker.add(MODEL, "", {"brightness": _sketch(rng, 1.5 if t >= shift_at else 0.0, 1000)}, t)
        t += s.window_s
        closed = tracker.close_due(t, refs)
        raised = next((a.at for a in closed.alerts if a.raised), None)
        view = tracker.gate_view()
        (f,) = view.models[MODEL]
        assert view.alert_at == 0.1 and f.feature == "brightness" and f.against in ("past", "reference")
        assert f.raised_at == raised
    assert raised is not None and raised > shift_at
    again = DriftTracker(s)
    again.restore(tracker.to_json())
    again.latest = tracker.latest
    assert again.gate_view() == tracker.gate_view()
    gate_open = opened(_site(seed), SITE, now=shift_at - 60.0)
    (v,) = [
        x
        for x in evaluate(gate_open, GateLimits.of(HEALTH, SITE).with_drift(tracker.gate_view(), MODEL))
        if x.criterion.startswith("input_drift")
    ]
    assert v.result == Answer.WORSE and v.dry_run and v.candidate is not None and v.candidate >= 0.1


def test_a_drift_state_file_from_before_keeps_its_alarm_and_a_bad_one_is_refused() -> None:
    """Alarms written before the gates read them carry no instant: read back as raised at 0 (before
    any gate), so a restart does not turn an old alert into a new one; a bad field is a FormatError."""
    old = {
        "version": 1,
        "past": [],
        "alarms": [{"model_id": MODEL, "feature": "pc1", "over": 3, "under": 0, "on": True}],
    }
    tracker = DriftTracker(DriftSettings())
    tracker.restore(old)
    alarm = tracker.alarms[(MODEL, "pc1")]
    assert alarm.on and alarm.at == 0.0 and alarm.against == "past"
    for bad in ({"against": "yesterday"}, {"at": "noon"}, {"distance": None}):
        doc = {**old, "alarms": [{**old["alarms"][0], **bad}]}
        with pytest.raises(FormatError, match="bad alarm"):
            DriftTracker(DriftSettings()).restore(doc)

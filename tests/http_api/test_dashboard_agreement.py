"""The gate panel's shadow agreement: overall and per class against the minimums, the commonest
confusion pairs, all as text for people (the figures the gate judged)."""

from __future__ import annotations

import dataclasses

from gateway.core.gates import GateLimits, Stage, new_gate
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from gateway.http.dashboard import gate_panel
from gateway.telemetry.history import WindowHistory
from tests.core.gates.helpers import drive, opened, same, unlike_devices
from tests.core.gates.shadow_site import Labels, ShadowFleet
from tests.http_api.test_dashboard_render import REPRS, shown_text

SITE = GateSettings(shadow=True)


def test_the_panel_shows_agreement_per_class_and_the_top_pairs() -> None:
    site = ShadowFleet(unlike_devices(6, 41), 41, Labels(miss=0.01, swap=("person", "forklift", 0.05)))
    limits = GateLimits.of(HealthChecks(max_cpu_percent=80), SITE)
    state = opened(site, SITE)
    state, _ = drive(state, site, limits, same, windows=30, until=lambda s: s.stage != Stage.SHADOW)
    assert state.stage == Stage.HALTED
    p = gate_panel.panel(state, deployment=None, settings=SITE, history=WindowHistory(), now=1e9)
    a = p["agreement"]
    assert a is not None and a["minimum"] == "97 %" and a["class_minimum"] == "90 %"
    assert a["below"] is True and float(a["overall"].removesuffix(" %")) < 97
    names = [c["class"] for c in a["classes"]]
    assert sorted(names) == ["forklift", "person", "spill"]
    assert names[0] == "forklift"  # the worst first: forklift is the rarer of the two swapped
    assert [x["pair"] for x in a["pairs"][:2]] in (
        ["person → forklift", "forklift → person"],
        ["forklift → person", "person → forklift"],
    )
    for text in shown_text(p):
        assert not REPRS.search(text), text


def test_a_gate_without_agreement_evidence_has_no_section() -> None:
    g = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", dataclasses.replace(SITE), 0.0)
    p = gate_panel.panel(g, deployment=None, settings=SITE, history=WindowHistory(), now=1e9)
    assert p["agreement"] is None

"""Site canary gates as a pure state machine: windows, events, controls and ``now`` in; state and
decisions (with their evidence) out. No I/O, no clock, no sleeping.

One :class:`GateState` per candidate deployment at the site. Stages::

    shadow (optional) -> waves (wave 1, 2, ...) -> done
                 \\-> halted (a criterion said worse) -> waves again only on release
                 \\-> aborted (by a person or the cloud)

Every criterion (one row of :mod:`~gateway.core.gates.table`) answers *worse* than its margin,
*no worse* than its margin, or *undecided*, from anytime-valid tests
(:mod:`~gateway.core.gates.sequential`) on paired evidence (:mod:`~gateway.core.gates.paired`): each
device on the candidate against its own level on the baseline (:mod:`~gateway.core.gates.levels`),
with what changed for everyone taken out by the devices still on the baseline. A candidate no worse
than every margin is halted at most at ``gates.false_halt_rate`` over its whole rollout; the rate is
split over the rows that apply (Bonferroni). Any criterion that says worse halts at once. A wave
advances when every criterion says no worse and ``soak_min_s`` has passed (with the manifest's
``warmup_inferences`` reached by ``warmup_share`` of its devices); still undecided at ``soak_max_s``
it waits for a person. The evidence runs over the whole rollout (waves are looks too); a person's
release of a halt starts it over.

Every version is gated, a model's first too (``gates.first_version = "waves"``): with no baseline
the absolute rows, install failures and silence judge each wave. A gate with a baseline whose
devices report metrics but have no level yet waits for them before wave 1 (``reference_wait_s`` at
most). A wave with a free place admits the next eligible device when it asks
(:func:`fill_wave`): the first device at a new site gets its first model on its first poll. Wave 1
grows by the evidence it can give (``first_wave_error_level``): the next devices in rank order, to
twice its count, until their pooled error rate on the baseline could show a rise past the margin.

Installation: a device counts as failed when its last event for the candidate is ``rolled_back``, or
``failed`` after it had downloaded the artifact. Silence: a device that ran the candidate and has not
been heard (metrics or an event) for ``silence_after_s`` is silent.

Controls (:func:`control_refusal` says why one would do nothing): ``hold`` freezes the waves where
they are, ``release`` resumes a held gate or re-opens a halted one at its wave, ``abort`` is final,
``approve`` lets a waiting wave advance. Criteria named in ``dry_run`` are judged and recorded (action
``observe``) but never halt.

The package: ``values`` (stages, actions, limits, verdicts, decisions, a gate's state), ``table``
(the criteria, one row each), ``table_docs`` (the rows as the README's table and the config's
margins), ``sequential`` (the tests), ``levels``, ``stream`` and ``paired`` (the evidence),
``evidence`` (events and windows into a gate), ``shadow`` (the shadow stage's agreement on the same
frames), ``criteria`` (:func:`evaluate`), ``words`` (a verdict for people) and ``machine`` (opening,
controls, :func:`step`); the public names are imported from here.
"""

from gateway.core.gates.criteria import evaluate
from gateway.core.gates.machine import (
    apply_controls,
    artifact_changed,
    control_refusal,
    fill_wave,
    open_gate,
    step,
)
from gateway.core.gates.values import (
    CONTROLS,
    MAX_DECISIONS,
    STOPPED,
    Action,
    Control,
    Decision,
    Event,
    GateLimits,
    GateState,
    InputDrift,
    Result,
    Stage,
    Verdict,
    new_gate,
)

__all__ = [
    "CONTROLS",
    "MAX_DECISIONS",
    "STOPPED",
    "Action",
    "Control",
    "Decision",
    "Event",
    "GateLimits",
    "GateState",
    "InputDrift",
    "Result",
    "Stage",
    "Verdict",
    "apply_controls",
    "artifact_changed",
    "control_refusal",
    "evaluate",
    "fill_wave",
    "new_gate",
    "open_gate",
    "step",
]

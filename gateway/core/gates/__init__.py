"""Site canary gates as a pure state machine: windows, events, controls and ``now`` in; state and
decisions (with their evidence) out. No I/O, no clock, no sleeping.

One :class:`GateState` per candidate deployment at the site. Stages::

    shadow (optional) -> waves (wave 0, 1, ...) -> done
                 \\-> halted (a criterion failed) -> waves again only on release
                 \\-> aborted (by a person or the cloud)

Every version is gated, a model's first too (``gates.first_version = "waves"``): with no baseline
the criteria that need none still judge each wave (absolute limits, install failures, unknown rate,
the manifest's confidence floor and expected classes, silence and invalid metrics).

A wave is judged on the evidence gathered since it opened: the candidate's aggregate windows, and
the baseline's (the previous stable version, same cohorts, same windows). Any criterion that fails
with enough data halts at once; a wave advances only after its soak (``soak_min_s`` and the manifest's
``warmup_inferences`` reached by ``warmup_share`` of the wave's devices) and when no criterion fails
and the candidate's own absolute checks had enough data. Relative and behavioural checks need a
baseline; without one (a model's first version at the site) they say so ("insufficient") and do not
block. Latency across windows is the inference-weighted mean of the windows' p50 and p95.

Installation: a device counts as failed when its last event for the candidate is ``rolled_back``, or
``failed`` after it had downloaded the artifact. A download that fails and is retried (a bad link)
is not a failure of the model, and a wave whose devices cannot download does not reach its warm-up,
so the site is never pushed forward at once.

Silence and invalid metrics: a model that crashes the app stops its metrics, and an agent that counts
errors its own way sends metrics that are refused as invalid. A device that ran the candidate and
has not been heard (metrics, valid or not, or an event) for ``silence_after_s`` is silent; more than
``silent_max`` of the runners silent fails ``silence``. Invalid messages from devices on the
candidate, as a share of its messages, more than ``invalid_rise_max`` above the baseline's fails
``invalid_metrics``. Both need ``min_devices`` / ``min_samples`` before they judge.

Controls (:func:`control_refusal` says why one would do nothing): ``hold`` freezes the waves where
they are, ``release`` resumes a held gate or re-opens a halted one at its wave, ``abort`` is final,
``approve`` lets a wave that passed advance when ``approve_each_wave`` is on. Criteria named in
``dry_run`` are judged and recorded (action ``observe``) but never halt.

The package: ``values`` (stages, actions, limits, verdicts, decisions, a gate's state), ``evidence``
(events and windows into a gate's :class:`~gateway.core.figures.Figures`), ``criteria`` (every
check, :func:`evaluate`) and ``machine`` (opening, controls, :func:`step`); everything is imported
from here.
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

"""The shadow stage's own evidence: the candidate's top-1 agreement with the active model on the same
frames (pure).

A device in shadow runs both models on each frame and reports ``agreement``
(:mod:`gateway.core.agreement`). Per window the gate adds, over the candidate's devices, the frames
agreed on over the frames compared: one observation of the ``shadow_agreement`` stream, and per
judged class (the classes that matter on the baseline, as for the ``class`` rows) the frames whose
active label was that class and how many of those the candidate agreed on
(``shadow_class_agreement:<class>``). A window is a cluster (frames of one window, and of one
camera, are not independent): the variance of the pooled share is the sandwich over windows
(:class:`~gateway.core.gates.stream.Stream`), as for the other absolute rows, so a scene that makes
every model stumble at once widens the bound instead of halting. The confusion pairs are summed
over the stage (at most :data:`MAX_PAIRS`) for the words and the dashboard; the judgement is
:mod:`gateway.core.gates.criteria`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from gateway.core.agreement import top_pairs
from gateway.core.gates.stream import Stream
from gateway.core.gates.values import Verdict
from gateway.core.window import DeviceWindow, WindowStats

OVERALL = "shadow_agreement"
PER_CLASS = "shadow_class_agreement"
MAX_PAIRS = 64  # confusion pairs a gate keeps (the first seen; a pair past it is not counted)


def take_agreement(
    out: dict[str, Stream], devices: Mapping[str, DeviceWindow], inferences: int, classes: Sequence[str]
) -> None:
    """One window of the candidate's shadow devices into the agreement streams (in place)."""
    frames = agree = 0
    seen: dict[str, float] = {}  # the devices that compared frames (no level leans on them: 0)
    per: dict[str, list[int]] = {}
    for dev, dw in devices.items():
        a = dw.agreement
        if a is None or a.frames <= 0:
            continue
        seen[dev] = 0.0
        frames, agree = frames + a.frames, agree + a.agree
        for name, (n, k) in a.classes.items():
            mine = per.setdefault(name, [0, 0])
            mine[0], mine[1] = mine[0] + n, mine[1] + k
    if frames <= 0:
        return
    out[OVERALL] = out.get(OVERALL, Stream()).add(float(agree), float(frames), 0.0, inferences, seen)
    for name in classes:
        n, k = per.get(name, (0, 0))
        if n > 0:
            key = f"{PER_CLASS}:{name}"
            out[key] = out.get(key, Stream()).add(float(k), float(n), 0.0, inferences, seen)


def add_pairs(pairs: Mapping[str, int], windows: Iterable[WindowStats]) -> Mapping[str, int]:
    """The stage's confusion pairs with those of ``windows`` (the candidate's shadow windows)."""
    out = dict(pairs)
    for w in windows:
        for dw in w.device_windows.values():
            if dw.agreement is None:
                continue
            for key, n in dw.agreement.pairs.items():
                if key in out or len(out) < MAX_PAIRS:
                    out[key] = out.get(key, 0) + n
    return out


def pairs_note(criterion: str, pairs: Mapping[str, int], n: int = 3) -> str:
    """The commonest confusion pairs behind a verdict ("person->car 31, car->person 29"): all of
    them for the overall row, those from its class for a class's row."""
    if ":" in criterion:
        cls = criterion.split(":", 1)[1]
        pairs = {k: v for k, v in pairs.items() if k.split("->", 1)[0] == cls}
    return ", ".join(f"{k} {v}" for k, v in top_pairs({k: v for k, v in pairs.items() if v > 0}, n).items())


def shadow_verdict(v: Verdict, stream: Stream | None, pairs: Mapping[str, int]) -> Verdict:
    """An agreement row's verdict with its sample in frames and its commonest confusion pairs."""
    if stream is None:
        return v
    samples = {"devices": len(stream.lever), "windows": stream.windows, "frames": round(stream.d)}
    note = pairs_note(v.criterion, pairs) if v.candidate is not None else v.note
    return dataclasses.replace(v, samples=samples, note=note)

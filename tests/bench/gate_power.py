"""Power and false halts of the canary gate on small sites of unlike devices (issue 24), three judges
side by side on the same traces.

Run: ``python tests/bench/gate_power.py [--seeds 200] [--sizes 10,20,50] [--stories good,errors_x3]
[--judges new,before,mw] [--before /work/wt-before] [--new CHECKOUT] [--report-s 120] [--publish-h 2]
[--hours 8] [--processes 2] [--out FILE] [--load FILE]``. ``--out`` appends each trace's outcomes as
a JSON line; ``--load`` reads them back (judges run earlier, or a stopped run resumed).

For each story of :mod:`tests.rollout.site_traces` and each site size, over ``--seeds`` seeds from
``--first-seed`` (10 000 on: seeds the gate was not tuned on), every trace goes through:

- **new**: this checkout's gate, by :func:`gateway.rollout.replay.replay_trace` (the real decisions),
  or the checkout named by ``--new`` in a subprocess as below;
- **before**: the code before issue 24 (fixed thresholds), the same replay from the checkout named by
  ``--before``, in a subprocess of its own (its ``gateway`` package, not this one);
- **mw**: a Mann-Whitney judge per metric (Kayenta's method), here in the bench: at every window
  after the publish, the candidate devices' reports since the first switch against the reports of the
  devices still on the baseline over the same period, the baseline shifted by the site's margin
  (errors + ``error_rate_rise_max``, latency x ``latency_ratio_max``, CPU + ``cpu_rise_max_percent``,
  confidence - ``confidence_drop_max``, each class's share x ``class_collapse_ratio``), one-sided, halt
  at p < 0.05 / metrics; waves advance on the same soak as the code before (no other condition), a
  device switches within one poll interval of its admission.

Printed per story and size: share halted, median and worst time to halt (minutes from the publish),
worst exposure (devices that ever ran the candidate), share halted within the first wave, and for
the good stories the median time to full rollout (the last wave admitted; a rollout that never got
there counts as infinitely late). Then the goal lines of issue 24 with PASS/FAIL. Nothing here
asserts a time; the wall time is printed. ``scipy`` and ``numpy`` are for this bench only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.core.settings import GateSettings
from gateway.core.waves import wave_target
from gateway.rollout.replay import replay_trace
from tests.bench.mann_whitney import Plan, mann_whitney
from tests.rollout import site_traces
from tests.rollout.site_traces import GOOD_STORIES, STORIES, site_trace

JUDGES = ("new", "before", "mw")
RATE = 0.05  # the stated false-halt rate (gates.false_halt_rate's default)
Job = tuple[str, int, int, dict[str, float]]  # story, devices, seed, the generator's knobs

# A judge from another checkout (the code before, or a new gate not merged here yet) runs in an
# interpreter of its own, its checkout first on the path; it builds the same trace from this
# checkout's generator (a pure file, loaded by path) and answers one line per job.
_CHILD = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("site_traces", sys.argv[1])
gen = sys.modules["site_traces"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(gen)
from gateway.core.settings import GateSettings
from gateway.core.waves import wave_target
from gateway.rollout.replay import replay_trace
for line in sys.stdin:
    job = json.loads(line)
    trace = gen.site_trace(job["story"], job["devices"], job["seed"], **job["knobs"])
    s = GateSettings()
    r = replay_trace(trace, s, name=job["story"], seed=job["seed"]).to_json()
    r.pop("decisions", None)
    r["first_wave"] = r.get("first_wave") or wave_target(s.waves, 0, job["devices"], s.min_devices_per_wave)
    r["bad_camera"] = trace[0]["sim"]["bad_camera"]
    print(json.dumps(r), flush=True)
"""


@dataclass(frozen=True)
class Outcome:
    outcome: str  # halted, done or undecided
    halt_min: float | None  # minutes from the publish
    exposed: int
    full_min: float | None  # minutes from the publish to the last wave's admission
    first_wave: int  # devices the judge's first wave admits on this site


def _outcome(r: Mapping[str, Any]) -> Outcome:
    pub = float(r["published_at_s"])
    halt, full = r["halted_at_s"], r["full_at_s"]
    return Outcome(
        str(r["outcome"]),
        None if halt is None else (halt - pub) / 60.0,
        int(r["exposed"]),
        None if full is None else (full - pub) / 60.0,
        int(r["first_wave"]),
    )


# ---- the jobs, two processes ----


class _Worker:
    """One pool process: the judges of one trace; a judge from another checkout in a child of its own."""

    def __init__(self, checkouts: Mapping[str, str], judges: frozenset[str]) -> None:
        self.judges = judges
        self.children = {
            judge: subprocess.Popen(
                [sys.executable, "-c", _CHILD, site_traces.__file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": path},
                cwd=path,
            )
            for judge, path in checkouts.items()
            if judge in judges
        }

    def run(self, job: Job) -> tuple[tuple[str, int, int], dict[str, Outcome], bool]:
        story, devices, seed, knobs = job
        line = json.dumps({"story": story, "devices": devices, "seed": seed, "knobs": knobs}) + "\n"
        out, cam = {}, False
        for judge, child in self.children.items():  # one at a time: two pool processes, two busy
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(line)
            child.stdin.flush()
            got = json.loads(child.stdout.readline())
            out[judge], cam = _outcome(got), bool(got["bad_camera"])
        mine = {"new", "mw"} & self.judges - set(self.children)
        if mine:
            s = GateSettings()
            trace = site_trace(story, devices, seed, **knobs)
            cam = bool(trace[0]["sim"]["bad_camera"])
            if "new" in mine:
                got = replay_trace(trace, s, name=story, seed=seed).to_json()
                got["first_wave"] = got["first_wave"] or wave_target(
                    s.waves, 0, devices, s.min_devices_per_wave
                )
                out["new"] = _outcome(got)
            if "mw" in mine:
                out["mw"] = _outcome(mann_whitney(trace, Plan.margins_of(s), seed, RATE))
        return (story, devices, seed), out, cam


_worker: _Worker | None = None  # one per pool process (multiprocessing's initializer pattern)


def _init(checkouts: Mapping[str, str], judges: frozenset[str]) -> None:
    global _worker
    _worker = _Worker(checkouts, judges)


def _run(job: Job) -> tuple[tuple[str, int, int], dict[str, Outcome], bool]:
    assert _worker is not None
    return _worker.run(job)


# ---- the figures ----

# (story, size, judge) -> seed -> (its outcome, whether the site had a bad camera)
Results = dict[tuple[str, int, str], dict[int, tuple[Outcome, bool]]]


def _load(path: str, results: Results, knobs: Mapping[str, float]) -> None:
    """Outcomes an earlier run wrote with ``--out`` (JSON lines): other judges to print beside these,
    or this run's own judges on the traces it has already done (a resumed run). Lines of traces made
    with other knobs are left out."""
    # lines written before a knob existed were made with its default
    default = {"report_s": 120.0, "publish_s": 7200.0, "hours": 8.0, "error_concentration": 100.0}
    for line in Path(path).read_text().splitlines():
        doc = json.loads(line)
        made = {**default, **doc.get("knobs", {})}
        made.setdefault("burst_s", made["report_s"])  # before the knob, a burst was one report
        if made != knobs:
            continue
        for judge, o in doc["judges"].items():
            o = {"first_wave": 1, **o}  # written before the field: both judges then admitted 1 first
            results[doc["story"], doc["size"], judge][doc["seed"]] = (Outcome(**o), doc["bad_camera"])


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.inf


def _mins(x: float) -> str:
    return "-" if x is None or math.isinf(x) else f"{x:.0f}"


def _cell(rows: list[tuple[Outcome, bool]], story: str) -> str:
    n = len(rows)
    if not n:
        return f"{0:>4} {'-':>6}" + " " * 42  # this judge has no traces of this story and size
    halts = [o.halt_min for o, _ in rows if o.halt_min is not None]
    first = sum(1 for o, _ in rows if o.outcome == "halted" and o.exposed <= o.first_wave)
    cell = (
        f"{n:>4} {len(halts) / n:6.1%} {_mins(_median(halts)):>4} {_mins(max(halts, default=math.inf)):>4} "
        f"{max(o.exposed for o, _ in rows):>4} {first / n:6.1%} "
        f"{sum(o.outcome == 'undecided' for o, _ in rows) / n:6.1%}"
    )
    if story in GOOD_STORIES:
        full = [math.inf if o.full_min is None else o.full_min for o, _ in rows]
        bad = [o for o, cam in rows if cam]
        cam = sum(o.outcome == "halted" for o in bad) / len(bad) if bad else 0.0
        cell += f" {_mins(_median(full)):>5} {cam:6.1%}"
    else:
        cell += " " * 13
    return cell


def report(results: Results, stories: Sequence[str], sizes: Sequence[int], judges: Sequence[str]) -> None:
    print(
        "\nn: traces (seeds); halted: share halted; t50, tmax: median and worst minutes from the publish to the halt; exp: worst"
        "\nexposure (devices that ever ran the candidate); wave0: share halted with no more devices exposed"
        "\nthan the first wave admits; undec: share neither halted nor done at the trace's end (waiting);"
        "\ngood stories: full, median minutes to full rollout (never: -), and camH, the share of the seeds"
        "\nwith a bad camera that halted\n"
    )
    print(f"{'':22} " + " | ".join(f"{j:^53}" for j in judges))
    cols = f"{'n':>4} {'halted':>6} {'t50':>4} {'tmax':>4} {'exp':>4} {'wave0':>6} {'undec':>6} {'full':>5} {'camH':>6}"
    print(f"{'story':17}{'size':>5} " + " | ".join(cols for _ in judges))
    for story in stories:
        for size in sizes:
            cells = [_cell(list(results[story, size, j].values()), story) for j in judges]
            print(f"{story:17}{size:>5} " + " | ".join(cells))
    print("\nissue 24, what it must show:")
    for judge in judges:
        for line in goals(results, stories, sizes, judge):
            print(f"  [{judge}] {line}")


def goals(results: Results, stories: Sequence[str], sizes: Sequence[int], judge: str) -> list[str]:
    out = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    for story in (s for s in GOOD_STORIES if s in stories):
        for size in sizes:
            rows = list(results[story, size, judge].values())
            n = len(rows)
            if not n:
                continue
            allowance = RATE + 2 * math.sqrt(RATE * (1 - RATE) / n)
            share = sum(o.outcome == "halted" for o, _ in rows) / n
            out.append(
                f"{verdict(share <= allowance)} false halts {story} at {size}: {share:.1%} "
                f"(stated {RATE:.0%}, allowance over {n} seeds {allowance:.1%})"
            )
    if 20 in sizes:
        for story in (s for s in stories if s not in GOOD_STORIES):
            rows = list(results[story, 20, judge].values())
            if not rows:
                continue
            ok = sum(o.outcome == "halted" and o.exposed <= o.first_wave for o, _ in rows) / len(rows)
            out.append(
                f"{verdict(ok >= 0.9)} {story} at 20: {ok:.1%} halted within the first wave (goal 90 %)"
            )
    if "errors_x3" in stories:
        for size in sizes:
            t = [
                math.inf if o.halt_min is None else o.halt_min
                for o, _ in results["errors_x3", size, judge].values()
            ]
            if not t:
                continue
            out.append(
                f"{verdict(_median(t) < 30)} errors_x3 at {size}: median {_mins(_median(t))} min to halt (goal < 30)"
            )
    if "good" in stories:
        for size in sizes:
            if not (results["good", size, judge] and results["good", size, "before"]):
                continue
            mine = _median(
                [
                    math.inf if o.full_min is None else o.full_min
                    for o, _ in results["good", size, judge].values()
                ]
            )
            old = _median(
                [
                    math.inf if o.full_min is None else o.full_min
                    for o, _ in results["good", size, "before"].values()
                ]
            )
            out.append(
                f"{verdict(mine <= old)} good at {size}: median {_mins(mine)} min to full rollout, "
                f"the code before {_mins(old)} min"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--first-seed", type=int, default=10_000)
    ap.add_argument("--sizes", default="10,20,50")
    ap.add_argument("--stories", default=",".join(STORIES))
    ap.add_argument("--judges", default=",".join(JUDGES), help="which judges to run now ('': print --load's)")
    ap.add_argument("--report-s", type=float, default=120.0, help="seconds between a device's reports")
    ap.add_argument("--publish-h", type=float, default=2.0, help="hours of baseline before the publish")
    ap.add_argument("--hours", type=float, default=8.0, help="the trace's length")
    ap.add_argument(
        "--error-concentration", type=float, default=100.0, help="a report's error rate: beta concentration"
    )
    ap.add_argument(
        "--burst-s", type=float, default=60.0, help="seconds of a device's time one error burst lasts"
    )
    ap.add_argument("--before", default="/work/wt-before", help="checkout of the code before ('' to skip)")
    ap.add_argument("--new", default="", help="checkout of the new gate (default: this one, in process)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--out", help="append every trace's outcomes to this file (JSON lines)")
    ap.add_argument("--load", action="append", default=[], help="outcomes of an earlier --out (or to resume)")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(","))
    stories = [x for x in args.stories.split(",") if x]
    asked = [j for j in args.judges.split(",") if j]  # none: only print what --load brings
    unknown = [x for x in stories if x not in STORIES] + [j for j in asked if j not in JUDGES]
    if unknown:
        ap.error(f"unknown {', '.join(unknown)}; stories: {', '.join(STORIES)}; judges: {', '.join(JUDGES)}")
    before = args.before if args.before and Path(args.before, "gateway").is_dir() else None
    run = frozenset(j for j in asked if j != "before" or before)
    checkouts = {"before": before} if before else {}
    if args.new:
        checkouts["new"] = args.new
    results: Results = defaultdict(dict)
    knobs = {"report_s": args.report_s, "publish_s": args.publish_h * 3600.0, "hours": args.hours}
    knobs["error_concentration"] = args.error_concentration
    knobs["burst_s"] = args.burst_s
    for path in args.load:
        _load(path, results, knobs)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [
        (st, n, seed, knobs)
        for n in reversed(sizes)
        for st in stories
        for seed in seeds
        if not all(seed in results[st, n, j] for j in run)  # a resumed run skips what it has
    ]
    print(
        f"{len(jobs)} traces: stories {', '.join(stories)}; sites of {args.sizes} devices; seeds {seeds.start}-"
        f"{seeds.stop - 1}; reports every {args.report_s:g} s, error bursts of {args.burst_s:g} s; publish at {args.publish_h:g} h of "
        f"{args.hours:g} h; default gate settings; "
        f"judges run now: {', '.join(sorted(run))} (the code before: {before or 'skipped'}; the new gate: "
        f"{args.new or 'this checkout'}); "
        f"{args.processes} processes; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    t0 = time.perf_counter()
    _run_jobs(jobs, knobs, results, checkouts, run, args.processes, args.out)
    judges = [j for j in JUDGES if any(results[st, n, j] for st in stories for n in sizes)]
    report(results, stories, sizes, judges)
    print(
        f"\nwall time {time.perf_counter() - t0:.0f} s; load average now {os.getloadavg()[0]:.1f} (2 cores)"
    )


def _run_jobs(
    jobs: Sequence[Job],
    knobs: Mapping[str, float],
    results: Results,
    checkouts: Mapping[str, str],
    run: frozenset[str],
    processes: int,
    out: str | None,
) -> None:
    t0 = time.perf_counter()
    sink = open(out, "a") if out else None  # noqa: SIM115 (closed below, written as results come)
    try:
        with multiprocessing.Pool(processes, initializer=_init, initargs=(checkouts, run)) as pool:
            for i, ((story, size, seed), got, cam) in enumerate(pool.imap_unordered(_run, jobs), start=1):
                for judge, o in got.items():
                    results[story, size, judge][seed] = (o, cam)
                if sink is not None:
                    doc = {"story": story, "size": size, "seed": seed, "bad_camera": cam, "knobs": knobs}
                    doc["judges"] = {j: dataclasses.asdict(o) for j, o in got.items()}
                    sink.write(json.dumps(doc) + "\n")
                    sink.flush()
                if i % max(1, len(jobs) // 20) == 0 or i == len(jobs):
                    el = time.perf_counter() - t0
                    left = el / i * (len(jobs) - i)
                    print(f"  {i}/{len(jobs)} traces, {el:.0f} s, about {left:.0f} s left", flush=True)
    finally:
        if sink is not None:
            sink.close()


if __name__ == "__main__":
    main()

"""The dashboard's pure pieces: numbers for people, the SVG charts, a gate's panel, the status as
text. The rule they share: nothing on the page is a Python value (``None``, ``False``, epoch
seconds, a byte count)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from gateway.core.gates import Action, Decision, GateLimits, Result, Stage, Verdict, new_gate
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from gateway.http.dashboard import gate_panel, human, view
from gateway.http.dashboard.progress import RateMeter
from gateway.http.dashboard.svg import Limit, Series, line_chart
from gateway.telemetry.history import Point, WindowHistory

NOW = 1_790_000_000.0
REPRS = re.compile(r"\b(None|True|False)\b|\b1[6-9]\d{8}(\.\d+)?\b|\d{7,}")


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):  # "key" is an attribute that keeps a detail open, never shown
        return [x for k, v in value.items() if k != "key" for x in leaves(v)]
    if isinstance(value, list | tuple):
        return [x for v in value for x in leaves(v)]
    return [value]


def shown_text(value: Any) -> list[str]:
    """Every string a person reads (SVG markup is checked apart, by parsing it)."""
    return [x for x in leaves(value) if isinstance(x, str) and not x.startswith("<svg")]


@pytest.mark.parametrize(
    ("fn", "arg", "want"),
    [
        (human.size, None, "–"),
        (human.size, 0, "0 B"),
        (human.size, 999, "999 B"),
        (human.size, 30_000_000, "30.0 MB"),  # one size format: gateway.core.human.size
        (human.size, 85_211_258_880, "85.2 GB"),
        (human.rate, 1_400_000, "1.4 MB/s"),
        (human.size, 262_144, "262.1 kB"),
        (human.duration, 14, "14 s"),
        (human.duration, 185, "3 min 5 s"),
        (human.duration, 7500, "2 h 5 min"),
        (human.duration, 3 * 86400, "3 days"),
        (human.percent, 45.2, "45 %"),
        (human.share, 0.0123, "1.23 %"),
        (human.share, None, "–"),
        (human.yes_no, False, "no"),
    ],
)
def test_human_numbers(fn: Any, arg: Any, want: str) -> None:
    assert fn(arg) == want


@pytest.mark.parametrize(
    ("at", "want"),
    [
        (None, "never"),
        (NOW - 2, "just now"),
        (NOW - 180, "3 min ago"),
        (NOW + 7200, "in 2 h"),
        (0.0, "never"),
    ],
)
def test_ago(at: float | None, want: str) -> None:
    assert human.ago(at, NOW) == want


def test_number_never_uses_an_exponent() -> None:
    for v in (0.0004, 0.01, 99.96, 999.9, 123456.0):
        assert "e" not in human.number(v, "ms")


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


NS = "{http://www.w3.org/2000/svg}"


def test_a_chart_is_valid_svg_with_its_points_limits_and_escaped_text() -> None:
    cand = Series("2.0 <b>", [(0, 10.0), (60, None), (120, 30.0), (180, 35.0)])
    base = Series("1.0", [(0, 12.0), (60, 11.0)], role="baseline")
    svg = line_chart("Latency & co", [cand, base], [Limit("p95 limit", 50.0)], fmt=lambda v: f"{v:g} ms")
    root = parse(svg)  # well-formed XML: every text escaped
    assert root.get("data-points") == "3"  # the first series' points with a value
    assert root.get("viewBox") == "0 0 360 170"
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 2  # the candidate's gap splits it: a dot, then a line; the baseline a line
    assert [len(p.get("points", "").split()) for p in lines] == [2, 2]
    assert any(c.get("class") == "limit" for c in root.findall(f"{NS}line"))
    texts = " ".join(t.text or "" for t in root.iter(f"{NS}text"))
    assert "p95 limit 50 ms" in texts and "2.0 <b>" not in svg and "Latency &amp; co" in svg
    assert "-3 min" in texts and "last" in texts


def test_a_limit_above_the_data_stays_in_view_and_an_empty_chart_says_so() -> None:
    root = parse(line_chart("CPU", [Series("c", [(0, 10.0)])], [Limit("limit", 80.0)]))
    limit = next(c for c in root.findall(f"{NS}line") if c.get("class") == "limit")
    assert 22 <= float(limit.get("y1", "-1")) <= 150  # inside the plot
    empty = parse(line_chart("CPU", [Series("c", [])]))
    assert empty.get("data-points") == "0"
    assert "no windows yet" in "".join(t.text or "" for t in empty.iter(f"{NS}text"))


def point(end: float, p95: float, err: float = 0.01) -> Point:
    return Point(end - 60, end, 3, 10, 1000, int(err * 1000), err, p95 / 2, p95, 40.0, 50.0, 52.0)


def test_a_gate_panel_tells_its_story_in_words() -> None:
    settings = GateSettings()
    g = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", settings, NOW - 600)
    failed = Verdict("max_error_rate", Result.WORSE, 0.12, None, 0.05, {"devices": 3, "samples": 40})
    passed = Verdict("max_cpu_percent", Result.NO_WORSE, 40.0, None, 80.0, {"devices": 3})
    g = type(g)(
        **{
            **g.__dict__,
            "stage": Stage.HALTED,
            "admitted": {"a": 0, "b": 0},
            "ran": frozenset({"a"}),
            "decisions": (
                Decision(NOW - 600, g.deployment, 0, Stage.WAVES, Action.OPEN, "opened"),
                Decision(NOW - 300, g.deployment, 0, Stage.WAVES, Action.HOLD, "looking", by="operator:ann"),
                Decision(
                    NOW - 60, g.deployment, 0, Stage.HALTED, Action.HALT, "max_error_rate", (failed, passed)
                ),
            ),
        }
    )
    p = gate_panel.panel(g, deployment=None, settings=settings, history=WindowHistory(), now=NOW)
    assert p["stage_text"].startswith("HALTED")
    assert p["controls"] == ["release", "abort"]  # what would not be refused
    assert [w["state"] for w in p["waves"]][:2] == ["halted", "to come"] and p["waves"][0]["admitted"] == "2"
    halt, hold, _open = p["timeline"]
    assert halt["when"] == "1 min ago" and halt["what"] == "HALTED" and halt["by"] == "the gate"
    assert halt["failed"][0] == {
        "criterion": "max error rate",
        "result": "worse",
        "candidate": "12.0 %",
        "baseline": "",
        "limit": "5.0 %",
        "words": "errors 12.0 %, limit 5.0 %: worse",
        "e_value": "",
        "samples": "devices 3, samples 40",
        "note": "",
    }
    assert halt["verdicts"][0]["candidate"] == "40 %"
    assert hold["control"] and hold["by"] == "ann" and hold["reason"] == "looking"
    for text in shown_text(p):
        assert not REPRS.search(text), text


def test_gate_charts_put_candidate_and_baseline_on_one_axis_with_the_gate_s_limits() -> None:
    settings = GateSettings()
    g = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", settings, NOW)
    h = WindowHistory()
    for i in range(5):
        h.add(("detector", "2.0.0", False), point(NOW + 60 * i, 80.0 + i))
        h.add(("detector", "1.0.0", False), point(NOW + 60 * i, 60.0))
    lim = GateLimits.of(
        HealthChecks(max_latency_ms=150.0, max_error_rate=0.05, max_cpu_percent=70.0), settings
    )
    charts = gate_panel.charts(g, lim, h)
    assert [c["title"] for c in charts] == ["Latency (p95, thin: p50)", "Error rate", "CPU", "Temperature"]
    latency = parse(charts[0]["svg"])
    assert latency.get("data-points") == "5"
    classes = [p.get("class") for p in latency.findall(f"{NS}polyline")]
    assert classes.count("candidate") == 2 and classes.count("baseline") == 2  # p95 and p50 each
    assert classes.count("limit") == 1  # baseline p50 x latency_ratio_max, dashed
    texts = " ".join(t.text or "" for c in charts for t in parse(c["svg"]).iter(f"{NS}text"))
    assert "p95 limit 150 ms" in texts and "limit 5.00 %" in texts and "limit 70 %" in texts
    assert "limit 85 °C" in texts  # the site's own temperature ceiling


def status(**over: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "gateway": {"version": "0.1.0", "site": "plant-7", "uptime_s": 7300},
        "clock": {"trusted": False, "system": NOW, "floor": NOW, "note": "set the clock (NTP)"},
        "upstream": {"url": "https://registry.example/", "last_poll_ok": None, "last_error": None},
        "index": None,
        "recovered": [],
        "safe_mode": None,
        "gates": [],
        "deployments": [
            {
                "model_id": "detector",
                "version": "2.0.0",
                "sha256": "ab",
                "length": 30_000_000,
                "mirrored": False,
                "progress_bytes": None,
                "target_cohort": "",
                "rollout_percentage": 100,
            },
        ],
        "store": {"verified_blobs": 0, "used_bytes": 0, "quota_bytes": 0},
        "health": {
            "system_cpu_percent": None,
            "ram_percent": 41.5,
            "ram_available_bytes": None,
            "disk_free_bytes": 85_211_258_880,
            "disk_percent": 12.0,
            "temperature_c": None,
            "load_average": None,
            "process_rss_bytes": 61_000_000,
        },
        "mqtt": {"listen": {}},
        "uplink": {"sinks": {"http": {"up": None}}, "outbox": {"pending": {}, "pending_bytes": 0}},
        "counters": {},
        "last_errors": {},
    }
    st.update(over)
    return st


def test_the_status_as_text_has_no_python_values_the_issue_saw() -> None:
    st = status()
    meter = RateMeter()
    meter.observe({"ab": (0, 30_000_000)}, NOW)
    progress = meter.observe({"ab": (3_000_000, 30_000_000)}, NOW + 2)
    doc = {
        "alerts": view.alerts(st, NOW),
        "summary": view.summary(st, NOW),
        "mirroring": view.mirroring(st, progress),
        "uplink": view.uplink(st),
        "box": view.box_health(st, 3),
    }
    text = json.dumps(doc, ensure_ascii=False)
    for s in shown_text(doc):
        assert not REPRS.search(s), s
    assert "85.2 GB" in text and "Clock not trusted" in text and "No signed index" in text
    assert doc["mirroring"][0]["text"] == "3.0 MB of 30.0 MB, 1.5 MB/s, about 18 s left"
    assert ["Last good poll", "never"] in doc["summary"] and ["Sink http", "not tried yet"] in doc["uplink"]


def test_the_rate_meter_takes_the_rate_over_recent_readings_and_restarts_with_a_transfer() -> None:
    m = RateMeter(span_s=10)
    assert m.observe({"a": (0, 100)}, 0)["a"].rate_bytes_per_s is None
    m.observe({"a": (10, 100)}, 1)
    p = m.observe({"a": (20, 100)}, 2)["a"]
    assert p.rate_bytes_per_s == 10 and p.eta_s == 8
    p = m.observe({"a": (5, 100)}, 3)["a"]  # started again from fewer bytes
    assert p.rate_bytes_per_s is None
    assert m.observe({}, 4) == {} and not m._readings  # artifacts no longer mirrored are forgotten


def test_the_rollout_card_counts_those_left_to_roll_back_as_devices_report() -> None:
    settings = GateSettings()
    g = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", settings, NOW - 600)
    g = type(g)(**{**g.__dict__, "stage": Stage.HALTED, "admitted": {"a": 0, "b": 0}, "ran": frozenset("ab")})

    def summary(on: set[str] | None) -> str:
        still = None if on is None else on.__contains__
        p = gate_panel.panel(
            g, deployment=None, settings=settings, history=WindowHistory(), now=NOW, on_candidate=still
        )
        return str(p["summary"])

    assert summary(None).endswith("2 ran it, 2 to roll back")
    assert summary({"a"}).endswith("2 ran it, 1 to roll back (1 back on 1.0.0)")
    assert summary(set()).endswith("2 ran it, 0 to roll back (2 back on 1.0.0)")


TASKS = [
    {"name": "mirror-poll", "state": "running", "restarts": 2, "failing": False, "last_error": "x",
     "last_failure_ago_s": 30.0},
    {"name": "uplink", "state": "restarting", "restarts": 7, "failing": True,
     "last_error": "RuntimeError('boom')", "last_failure_ago_s": 1.0},
]  # fmt: skip


def test_supervised_tasks_show_their_restarts_and_a_failing_one_is_an_alert() -> None:
    st = status(tasks=TASKS)
    alerts = view.alerts(st, NOW)
    assert any("Task uplink keeps failing (7 restarts; last: RuntimeError('boom'))" in a for a in alerts)
    assert ["Tasks", "2 supervised; FAILING: uplink"] in view.summary(st, NOW)
    calm = status(tasks=[{**TASKS[0]}])
    assert ["Tasks", "1 supervised; restarts: mirror-poll 2x"] in view.summary(calm, NOW)
    assert not any("keeps failing" in a for a in view.alerts(calm, NOW))

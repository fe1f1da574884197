"""``ota-gateway status`` for people, from a status document with every section filled: no Python
values (None, True, False), no Unix times or raw byte counts, transfers with their rate and ETA."""

from __future__ import annotations

import re

from gateway.commands.status import render

NOW = 1_796_230_000.0


def doc() -> dict[str, object]:
    return {
        "gateway": {"version": "0.1.0", "site": "plant-7", "uptime_s": 7500, "started": NOW - 7500,
                    "data_id": "ab12", "data_dir": "/var/lib/ota-gateway", "pid": 4242},
        "clock": {"trusted": False, "system": NOW, "floor": NOW + 10, "note": "the clock is behind", "floor_source": {}},
        "upstream": {"url": "https://registry.example/", "last_poll_ok": NOW - 180, "last_error": None, "no_index": None},
        "index": {"version": 7, "expires": NOW - 60, "expired": True, "rejected_deployments": [["x@1", "bad sig"]], "commands": {}},
        "recovered": [{"file": "/var/lib/ota-gateway/gates/gates.json", "action": "moved aside; safe mode"}],
        "safe_mode": "gates.json was damaged",
        "gates": [{"deployment": "detector@2.0.0", "baseline": None, "stage": "waves", "wave": 1,
                   "held_by": None, "awaiting_approval": True, "admitted": 12, "ran": 10, "rollback": 0,
                   "last_decision": {"action": "advance", "reason": "healthy"}}],
        "deployments": [
            {"model_id": "detector", "version": "2.0.0", "sha256": "a" * 64, "length": 30_000_000,
             "mirrored": False, "progress_bytes": 13_500_000, "target_cohort": None, "rollout_percentage": 100.0,
             "progress": {"done_bytes": 13_500_000, "total_bytes": 30_000_000, "percent": 45.0,
                          "rate_bps": 2_100_000, "eta_s": 8}},
            {"model_id": "detector", "version": "1.0.0", "sha256": "b" * 64, "length": 29_000_000,
             "mirrored": True, "progress_bytes": None, "target_cohort": "hw:rev2", "rollout_percentage": 25},
        ],
        "store": {"verified_blobs": 1, "used_bytes": 29_000_000, "quota_bytes": 4_000_000_000, "quarantined": []},
        "health": {"process_cpu_percent": 1.5, "process_rss_bytes": 62_771_200, "system_cpu_percent": 20.0,
                   "ram_percent": 40.0, "ram_available_bytes": 2_400_000_000, "disk_free_bytes": 85_211_258_880,
                   "disk_percent": 24.4, "temperature_c": None},
        "mqtt": {"listen": {}, "connections": 0, "refused": 0},
        "uplink": {"sinks": {"http": {"up": None}}, "outbox": {"pending": {"metrics": {"records": 3, "bytes": 900}}, "pending_bytes": 900}},
        "counters": {},
        "last_errors": {"mirror.index_poll_errors": "GET https://registry.example/keys.json: timed out"},
    }  # fmt: skip


def test_every_section_reads_as_text_for_a_person() -> None:
    out = render(doc(), NOW)
    assert "None" not in out and "True" not in out and "False" not in out
    assert not re.search(r"\b1\d{9}(\.\d+)?\b", out), out
    assert not re.search(r"\b\d{7,}\b", out), out
    for part in (
        "Gateway for site 'plant-7'",
        "up for:            2 h 5 min (pid 4242)",
        "NOT trusted",
        "SAFE MODE",
        "last poll ok:      3 min ago",
        "version 7, EXPIRED",
        "rejected:          x@1: bad sig",
        "detector@2.0.0               mirroring 45% (13.5 MB of 30.0 MB) at 2.1 MB/s, about 7.9 s left; for all devices, 100%",
        "detector@1.0.0               mirrored, 29.0 MB; for hw:rev2, 25%",
        "waiting for approval",
        "waves at wave 2, ",  # the stored index 1 is the second wave: numbered from 1 for people
        "29.0 MB of the 4.0 GB quota",
        "85.2 GB free",
        "MQTT broker:       off",
        "http not tried yet",
        "3 record(s) waiting, 900 B",
        "mirror.index_poll_errors: GET https://registry.example/keys.json: timed out",
    ):
        assert part in out, f"{part!r} not in:\n{out}"


def test_an_empty_gateway_says_so() -> None:
    empty = {"gateway": {"site": "s"}, "upstream": {"no_index": "tried X (404 not found)"}, "index": None}
    out = render(empty, NOW)
    assert "none held yet" in out and "tried X (404 not found)" in out
    assert "none in the signed index" in out and "None" not in out


def test_the_tasks_section_names_each_supervised_task_and_a_failing_one() -> None:
    tasks = [
        {"name": "mirror-poll", "state": "running", "restarts": 0, "failing": False, "last_error": None,
         "last_failure_ago_s": None},
        {"name": "uplink", "state": "restarting", "restarts": 7, "failing": True,
         "last_error": "RuntimeError('boom')", "last_failure_ago_s": 65.0},
    ]  # fmt: skip
    out = render({**doc(), "tasks": tasks}, NOW)
    assert "Tasks" in out and "None" not in out
    assert "mirror-poll:       running, 0 restart(s)" in out
    assert (
        "uplink:            FAILING, not ready, 7 restart(s); last error 1 min 5 s ago: RuntimeError('boom')"
        in out
    )


def test_the_samples_section_counts_by_reason_in_words() -> None:
    samples = {"enabled": True, "raw": False, "budget_bytes_per_day": 64 << 20, "upload_url": "http://up/samples",
               "upload_failures": 2, "last_failure": "sample upload http://up/samples/ab: HTTP 503",
               "kept_now": 40, "waiting_upload": 3, "kept_bytes": 1_500_000, "day_spent_bytes": 12_000_000,
               "counts": {"kept": {"error": 5, "random": 90}, "sent": {"error": 4, "random": 10},
                          "dropped_budget": {"random": 40}, "duplicate": {"random": 2}}}  # fmt: skip
    out = render({**doc(), "samples": samples}, NOW)
    assert "None" not in out and not re.search(r"\b\d{7,}\b", out), out
    for part in (
        "Samples for retraining",
        "budget today:      12.0 MB of 67.1 MB given out (18 %)",
        "waiting:           40 kept for the budget, 3 chosen for upload (1.5 MB)",
        "error:             5 kept, 4 sent, 0 dropped by budget",
        "random:            90 kept, 10 sent, 40 dropped by budget, 2 repeats",
        "upload:            2 failed attempts; last: sample upload http://up/samples/ab: HTTP 503",
    ):
        assert part in out, f"{part!r} not in:\n{out}"
    assert "Samples" not in render({**doc(), "samples": {"enabled": False}}, NOW)

"""Upstream credentials and ingest URL queries never show: banner, logs, /status, dashboard.

A real ``ota-gateway serve`` process whose upstream and ingest URLs carry secrets and point at a
port where nothing listens, so that both fail and say so everywhere they can."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.runtime.redact import redact, redact_tree
from tests.peers import free_port, gateway_process, stop, wait_port

SECRETS = ("hunter2", "s3cr3tkey", "sig-abc123", "mqttpass")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://ann:hunter2@reg.example/site/", "https://***@reg.example/site/"),
        (
            "poll failed: http://u:p@h:8080/x/index.json?sig=abc (timeout)",
            "poll failed: http://***@h:8080/x/index.json?*** (timeout)",
        ),
        (
            "ingest https://in.example/v1?key=s3cr3tkey&x=1: HTTP 500",
            "ingest https://in.example/v1?*** HTTP 500",
        ),  # up to the next space: better too much
        ("mqtt://dev:mqttpass@cloud:8883", "mqtt://***@cloud:8883"),
        ("registry", "registry"),
        ("/var/lib/ota/registry", "/var/lib/ota/registry"),
        ("http://plain.example/path", "http://plain.example/path"),
        ("'http://a:b@c/'", "'http://***@c/'"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_tree() -> None:
    tree = {"a": ["https://u:hunter2@x/"], "b": {"c": "https://x/?k=s3cr3tkey"}, "n": 3, "z": None}
    assert redact_tree(tree) == {"a": ["https://***@x/"], "b": {"c": "https://x/?***"}, "n": 3, "z": None}


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def test_serve_never_shows_url_secrets(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there: every upstream call fails and is logged
    http, op = free_port(), free_port()
    env = {
        "OTA_GATEWAY_MIRROR__UPSTREAM": f"http://ann:hunter2@127.0.0.1:{dead}/registry?sig=sig-abc123",
        "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.2",
        "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.1",
        "OTA_GATEWAY_UPLINK__INGEST_URL": f"http://127.0.0.1:{dead}/ingest?key=s3cr3tkey",
        "OTA_GATEWAY_UPLINK__MQTT_URL": f"mqtt://dev:mqttpass@127.0.0.1:{dead}",
        "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "0.2",
    }
    args = ["--data", str(tmp_path / "data"), "--http", f"127.0.0.1:{http}",
            "--operator", f"127.0.0.1:{op}", "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    log = (tmp_path / "stderr.log").open("w")
    proc = gateway_process(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        wait_port(op, 20)
        base = f"http://127.0.0.1:{op}"
        deadline = time.monotonic() + 20
        while True:  # until both the mirror and the uplink have failed (and logged it)
            status = json.loads(get(base + "/status"))
            if status["upstream"]["last_error"] and any(
                k.startswith("uplink") for k in status["last_errors"]
            ):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)  # polling a condition with a deadline
        dashboard = get(base + "/") + get(base + "/dashboard/state")
        stop(proc)
        assert proc.stdout is not None
        banner = proc.stdout.read()
    finally:
        stop(proc)
        log.close()
        if proc.stdout is not None:
            proc.stdout.close()
    logs = (tmp_path / "stderr.log").read_text()
    assert "***@127.0.0.1" in logs and "?***" in logs and "***@" in banner  # URLs shown, secrets not
    assert "for labs and trusted LANs only" in banner  # the zero-config default is open access
    shown = {"banner": banner, "logs": logs, "status": json.dumps(status), "dashboard": dashboard}
    for where, text in shown.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in the {where}"

"""Typos fail loudly, and long transfers say where they are: ``ota-gateway serve`` as a process.

- an upstream folder that does not exist stops start-up in one line naming the key (and is not
  made); an unknown URL scheme (``htps://``) too (no folder ``htps:`` appears);
- a wrong site names the URLs tried and what they answered, in the log and in ``status``;
- an unreachable upstream is one short line, not repeated on every retry;
- a slow transfer (nginx with ``limit_rate``) logs percent, rate and time left, and ``status``
  shows the total and the time left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import Registry
from tests.peers import ROOT, free_port, gateway_process, nginx, stop, wait_port

FAST = {
    "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.3",
    "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.05",
    "OTA_GATEWAY_MIRROR__RETRY_MAX_S": "0.2",
}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_GATEWAY_")}
    env |= {"PYTHONPATH": str(ROOT), "OTA_GATEWAY_DISCOVERY__ENABLED": "false"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def ports() -> list[str]:
    return ["--http", f"127.0.0.1:{free_port()}", "--operator", f"127.0.0.1:{free_port()}",
            "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip


@contextmanager
def serve(args: list[str], log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = gateway_process(args, env={**FAST, **env}, stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_port(int(args[3].rsplit(":", 1)[1]), 20)
        yield proc
    finally:
        stop(proc)


def status(data: Path) -> dict[str, object]:
    done = cli("status", "--data", str(data), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def wait_for(cond: object, timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (value := cond()):  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling a condition with a deadline
    return value


def test_a_missing_upstream_folder_or_an_unknown_scheme_stops_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    for upstream, expect in (
        (str(missing), f"({missing} does not exist)"),
        ("htps://registry.example/fleet", "not the scheme 'htps'"),
        ("https:///no-host", "a URL with a host name"),
    ):
        done = cli("serve", "--data", str(tmp_path / "data"), "--upstream", upstream, *ports(), cwd=tmp_path)
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(
            "ota-gateway: configuration error: configuration: mirror.upstream: expected"
        )
        assert expect in lines[0]
    assert not missing.exists()
    assert not (tmp_path / "htps:").exists()


def test_a_wrong_site_names_the_urls_that_answered_404(reg: Registry, tmp_path: Path) -> None:
    reg.publish(os.urandom(1000))
    data, log = tmp_path / "data", tmp_path / "gw.log"
    with nginx(reg.root) as upstream:
        args = [*ports(), "--data", str(data), "--upstream", upstream.url, "--site", "test-sitee",
                "--trusted-key", str(reg.public_key)]  # fmt: skip
        with serve(args, log):
            tried = [f"{upstream.url}/sites/test-sitee/index.json", f"{upstream.url}/index.json"]
            doc = wait_for(lambda: status(data)["upstream"]["no_index"], 20, "the no-index report")  # type: ignore[index]
            for url in tried:
                assert f"{url} (404 not found)" in str(doc)
            human = cli("status", "--data", str(data)).stdout
            assert tried[0] in human and "none held yet" in human
    text = log.read_text()
    lines = [line for line in text.splitlines() if "no index published upstream" in line]
    assert len(lines) == 1, text  # said once, not on every poll
    assert all(url in lines[0] for url in tried) and "'test-sitee'" in lines[0]


def test_an_unreachable_upstream_is_one_short_line_not_one_per_retry(reg: Registry, tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "gw.log"
    dead = free_port()
    args = [*ports(), "--data", str(data), "--upstream", f"http://127.0.0.1:{dead}/registry",
            "--site", "test-site", "--trusted-key", str(reg.public_key)]  # fmt: skip
    with serve(args, log):

        def failures() -> bool:
            counters = status(data)["counters"]
            return int(counters.get("mirror.index_poll_errors", 0)) >= 5  # type: ignore[attr-defined]

        wait_for(failures, 30, "five failed polls")
        last = status(data)["upstream"]["last_error"]  # type: ignore[index]
    assert f"cannot connect to 127.0.0.1:{dead}" in str(last) and len(str(last)) < 160, last
    lines = [line for line in log.read_text().splitlines() if "index poll failed" in line]
    assert len(lines) == 1, lines  # five failures and more, one line (the next after 60 s, with a count)
    assert len(lines[0]) < 250 and "ClientConnectorError" not in lines[0], lines[0]


def test_a_slow_transfer_logs_percent_rate_and_eta_and_status_shows_them(
    reg: Registry, tmp_path: Path
) -> None:
    manifest = reg.publish(os.urandom(3_000_000))
    data, log = tmp_path / "data", tmp_path / "gw.log"
    with nginx(reg.root, limit_rate="300k") as upstream:
        args = [*ports(), "--data", str(data), "--upstream", upstream.url, "--site", "test-site",
                "--trusted-key", str(reg.public_key)]  # fmt: skip
        with serve(args, log, OTA_GATEWAY_MIRROR__PROGRESS_LOG_INTERVAL_S="1"):

            def in_transit() -> dict[str, object] | None:
                deps = status(data)["deployments"]
                p = deps[0]["progress"] if deps else None  # type: ignore[index]
                return p if p and p["eta_s"] is not None else None  # type: ignore[index]

            progress = wait_for(in_transit, 30, "a transfer with a rate")
            assert progress["total_bytes"] == manifest["length"]  # type: ignore[index]
            human = cli("status", "--data", str(data)).stdout
            assert "detector@1.0.0" in human and ("left" in human or "mirrored" in human), human
            wait_for(lambda: "mirrored and verified" in log.read_text(), 60, "the transfer to finish")
    lines = [line for line in log.read_text().splitlines() if "fetching detector@1.0.0:" in line]
    assert lines, log.read_text()
    assert (
        "% (" in lines[0]
        and " of 3.0 MB) at " in lines[0]
        and "/s, about " in lines[0]
        and " left" in lines[0]
    )

"""Real peers from Debian for the tests and benchmarks: nginx as a static upstream, ports, processes.

Each peer runs on an ephemeral port with its own prefix folder, is waited for by polling its port
(never by sleeping), and is stopped in ``finally``/fixture teardown.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


def gateway_process(
    args: list[str], *, env: Mapping[str, str] | None = None, **popen: object
) -> subprocess.Popen[bytes]:
    """``python -m gateway serve ARGS`` from this checkout, mDNS off unless ``env`` turns it on."""
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OTA_GATEWAY_DISCOVERY__ENABLED": "false",
        **(env or {}),
    }
    return subprocess.Popen([sys.executable, "-m", "gateway", "serve", *args], env=environ, **popen)  # type: ignore[call-overload,no-any-return]


def serve_args(
    data: Path,
    upstream: str,
    http_port: int,
    *,
    site: str | None = None,
    trusted_key: Path | None = None,
    mqtt_port: int | None = None,
) -> list[str]:
    """The command line of a gateway on loopback: the given HTTP port, free operator and MQTT ports."""
    args = ["--data", str(data), "--upstream", upstream, "--http", f"127.0.0.1:{http_port}",
            "--operator", f"127.0.0.1:{free_port()}", "--mqtt", f"127.0.0.1:{mqtt_port or free_port()}"]  # fmt: skip
    if site:
        args += ["--site", site]
    if trusted_key:
        args += ["--trusted-key", str(trusted_key)]
    return args


def can_mount_tmpfs() -> bool:
    """Whether ``unshare -rm`` works here (user and mount namespaces): a tmpfs of a test's own."""
    unshare = shutil.which("unshare")
    return (
        unshare is not None and subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode == 0
    )


@contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` ("8m") mounted at ``where`` (tmpfs), so a disk really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def gateway_on_tmpfs(
    tmp_path: Path, size: str, http_port: int, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """A gateway whose data folder is on a tmpfs of ``size`` ("16m") in a mount namespace of its
    own, and the path of a filler file on that tmpfs, reached through /proc/PID/root (see
    :func:`fill`): its SQLite meets a real ENOSPC, nothing mocked."""
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "registry").mkdir()
    script = f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"'
    argv = [shutil.which("unshare") or "unshare", "-rm", "sh", "-c", script, str(disk),
            sys.executable, "-m", "gateway", "serve",
            *serve_args(disk / "data", str(tmp_path / "registry"), http_port)]  # fmt: skip
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OTA_GATEWAY_DISCOVERY__ENABLED": "false",
        **(env or {}),
    }
    proc = subprocess.Popen(argv, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, Path(f"/proc/{proc.pid}/root") / str(disk).lstrip("/") / "filler"


def fill(filler: Path) -> None:
    """Write ``filler`` until its disk is full. Unbuffered: ENOSPC comes from the write itself (a
    buffered file raised it again at its close, outside the caller's try)."""
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass  # ENOSPC: the disk is full


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _port_plan() -> tuple[range, int]:
    """This process's ports for :func:`free_port`: its xdist worker's slice of the ports below the
    kernel's ephemeral range, and a start in it drawn from the pid (two pytest runs side by side,
    as in .ci/run, have workers of the same name)."""
    low = _ephemeral_low()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    span = (low - FREE_PORTS_FROM) // workers
    if span < 500:  # an unusual ephemeral range: let the kernel pick (and race)
        return range(0), 0
    index = int(worker) % workers if worker.isdigit() else 0
    first = FREE_PORTS_FROM + index * span
    return range(first, first + span), os.getpid() * 7919 % span


FREE_PORTS_FROM = 10_000
_plan: tuple[range, int] | None = None
_handed_out = 0


def free_port() -> int:
    """A free port for a peer that cannot bind port 0 and say which port it got (nginx, mosquitto,
    a gateway started with ``--listen``). Picking a port the kernel gave to a throwaway socket
    races: before the peer binds it, any outgoing connection or port-0 bind on the machine may be
    given it too. So these come from below the kernel's ephemeral range, which the kernel never
    hands out by itself. Each xdist worker takes its own slice and hands its ports out in turn, so
    none comes round again before the whole slice has (a port whose peer has stopped may linger in
    TIME_WAIT), and a port some other program holds is skipped (checked with a bind)."""
    global _plan, _handed_out
    if _plan is None:
        _plan = _port_plan()
    ports, start = _plan
    for _ in range(min(len(ports), 1000)):
        port = ports[(start + _handed_out) % len(ports)]
        _handed_out += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s") from None
            time.sleep(0.02)  # polling a condition with a deadline, not synchronising by sleep


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (.ci/run installs it)")
    return path


@dataclass
class Nginx:
    port: int
    prefix: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[str]:
        path = self.prefix / "access.log"
        return path.read_text().splitlines() if path.exists() else []


NGINX_CONF = """
worker_processes {workers};
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format combined_range '$request "$http_range" $status $body_bytes_sent';
    access_log {prefix}/access.log combined_range;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    {extra_http}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        {server}
    }}
}}
"""


@contextmanager
def nginx(
    root: Path | None = None,
    *,
    limit_rate: str = "",
    server: str = "",
    extra_http: str = "",
    workers: int = 1,
    port: int = 0,
) -> Iterator[Nginx]:
    """nginx serving ``root`` as static files (or the given ``server`` block body), on ``port``
    (0: a free one; a given one lets a test name the URL before the server is up)."""
    binary = need("nginx")
    port = port or free_port()
    prefix = Path(
        subprocess.run(
            ["mktemp", "-d", "/tmp/nginx-test.XXXXXX"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    os.chmod(prefix, 0o755)
    body = server or f"location / {{ root {root}; {f'limit_rate {limit_rate};' if limit_rate else ''} }}"
    conf = NGINX_CONF.format(
        workers=workers,
        user="user root;" if os.geteuid() == 0 else "",
        prefix=prefix,
        port=port,
        server=body,
        extra_http=extra_http,
    )
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield Nginx(port, prefix, proc)
    finally:
        stop(proc)
        shutil.rmtree(prefix, ignore_errors=True)


class IngestServer:
    """The cloud's HTTP ingest (``POST /ingest``) on 127.0.0.1:``port`` (0: a free one, read back at
    start); a subclass's ``handle`` says what it keeps of each batch (:func:`ingest_batch` reads one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/ingest", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def ingest_batch(request: web.Request) -> dict[str, Any]:
    """An uplink batch's JSON, gzipped or not."""
    raw = await request.read()
    doc: dict[str, Any] = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    return doc

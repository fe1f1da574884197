"""What the benchmarks share: ``wrk`` runs and their figures, CPU-seconds of processes, a registry
with the cloud's key in a fresh work folder, and a gateway process serving it.

Benchmarks print figures; nothing here asserts a time. Run the benchmarks from the checkout's root
(``python tests/bench/<name>.py``): each puts the root on ``sys.path`` before importing this.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from gateway import registry
from tests.peers import free_port, gateway_process, serve_args, stop, wait_port

UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass(frozen=True)
class WrkResult:
    rps: float  # requests per second
    bytes_read: float  # the body and header bytes wrk read in the run


def wrk(
    url: str,
    *,
    seconds: int,
    connections: int = 64,
    threads: int = 2,
    lua: Path | None = None,
    timeout_s: int | None = None,
) -> WrkResult:
    """Run ``wrk`` (Debian) against ``url`` and read its summary."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    if timeout_s is not None:
        cmd += ["--timeout", f"{timeout_s}s"]
    if lua is not None:
        cmd += ["-s", str(lua)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    read = re.search(r"requests in [\d.]+\w+, ([\d.]+)(\w+) read", out)
    return WrkResult(float(rps.group(1)), float(read.group(1)) * UNITS[read.group(2)] if read else 0.0)


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    """User plus system CPU-seconds of the processes so far (one that has exited counts 0)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def box_busy_seconds() -> float:
    """CPU-seconds the whole box has spent busy so far (all but idle and I/O wait): what a server's
    own figure leaves out, such as the kernel's packet work charged to softirq or to the client."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


@dataclass(frozen=True)
class Work:
    """A fresh work folder (readable by nginx's workers) with the cloud's keys and a registry."""

    root: Path
    keys: Path
    registry: Path

    @property
    def private_key(self) -> Path:
        return self.keys / "private.pem"

    @property
    def public_key(self) -> Path:
        return self.keys / "public.pem"


def bench_work(prefix: str) -> Work:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    keys, reg = root / "keys", root / "registry"
    registry.keygen(keys, "ecdsa-p256")
    reg.mkdir()
    return Work(root, keys, reg)


@contextmanager
def gateway(
    work: Work,
    upstream: str,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    checkout: Path | None = None,
) -> Iterator[tuple[str, psutil.Process]]:
    """``ota-gateway serve`` of this checkout (or of ``checkout``, for a before/after) for site
    ``bench``, its output dropped; yields its base URL and process once its HTTP port answers, and
    stops it after."""
    port = port or free_port()
    where = {} if checkout is None else {"PYTHONPATH": str(checkout)}
    proc = gateway_process(
        serve_args(work.root / "data", upstream, port, site="bench", trusted_key=work.public_key),
        env={"OTA_GATEWAY_LOG_LEVEL": "warning", **where, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **({} if checkout is None else {"cwd": str(checkout)}),
    )
    try:
        wait_port(port, 30)
        yield f"http://127.0.0.1:{port}", psutil.Process(proc.pid)
    finally:
        stop(proc)

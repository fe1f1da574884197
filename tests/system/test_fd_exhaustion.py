"""A real ``ota-gateway serve`` with few file descriptors, flooded with idle connections: it must
pause accepting rather than spin, log a bounded number of lines, and serve again once they go.

The same scenario as ``tests/bench/fd_exhaustion.py`` (which prints the figures), smaller. Bounds
are counts (log lines, tracebacks), never times.
"""

from __future__ import annotations

import resource
from pathlib import Path

from tests.bench.fd_exhaustion import scenario

NOFILE = 160  # the gateway needs about 40 for itself: the rest go to connections
CONNECTIONS = 450  # nearly three times that: the rest wait in the listen backlogs


def test_out_of_descriptors_pauses_accepting_logs_a_few_lines_and_recovers(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CONNECTIONS + 128:  # this test holds one descriptor per connection itself
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, CONNECTIONS + 256), hard))
    try:
        f = scenario(tmp_path, nofile=NOFILE, connections=CONNECTIONS, hold_s=2.0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert f.connections_opened == CONNECTIONS
    assert f.accept_errors >= 1  # it did run out
    assert f.alive  # (c) the process did not die
    assert f.poll_status in (200, 204) and f.connack == "20020000"  # (a) a poll and a CONNECT work after
    assert f.tracebacks == 0  # (b) bounded logging: no traceback per failed accept ...
    assert f.log_lines_exhausted <= 20, f.sample  # ... and a few lines, not one per accept

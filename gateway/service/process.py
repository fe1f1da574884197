"""The process around the gateway: signals, systemd's notify protocol, start and stop.

``serve`` runs :func:`run_until_signalled`: the watchdog loop is supervised from before start-up
(start-up re-hashes every blob, and systemd wants pings meanwhile), ``READY=1`` goes out once the
gateway listens, and SIGINT/SIGTERM stop it in reverse order (``STOPPING=1`` first).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from gateway.runtime.sdnotify import Notifier, watchdog_loop
from gateway.service.wiring import Gateway

log = logging.getLogger(__name__)


async def run_until_signalled(gateway: Gateway, on_started: Callable[[Gateway], None] | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier.from_env()  # systemd Type=notify; nothing outside systemd
    # Fed from the loop during start-up too (the blobs are re-hashed in worker threads meanwhile).
    failing = gateway.supervisor.failing
    if notifier.watchdog_s is not None:  # under systemd with WatchdogSec= only
        gateway.supervisor.supervise(
            "systemd-watchdog", lambda: watchdog_loop(notifier, gateway.readiness.status_line, failing)
        )
    try:
        await gateway.start()
    except BaseException:
        await gateway.supervisor.close()  # what start opened it closed itself
        notifier.close()
        raise
    try:
        if on_started is not None:
            on_started(gateway)
        notifier.ready(await gateway.readiness.status_line())
        await stop.wait()
    finally:
        log.info("stopping")
        notifier.stopping()
        await gateway.stop()
        notifier.close()

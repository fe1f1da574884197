"""systemd's notify protocol (``Type=notify``): READY, WATCHDOG, STATUS and STOPPING datagrams.

The protocol is one datagram of ``KEY=value`` lines to the unix socket named by ``$NOTIFY_SOCKET``
(an ``@`` first means the Linux abstract namespace), see sd_notify(3); it needs no library. Outside
systemd (no ``NOTIFY_SOCKET``) every call does nothing.

The watchdog is fed from the event loop itself (:func:`watchdog_loop`), every half of
``$WATCHDOG_USEC`` (``WatchdogSec=`` in the unit): a loop blocked or wedged stops the pings and
systemd restarts the process, which a thread feeding it would hide. Each ping carries a fresh
``STATUS=`` line (ready, or the reasons it is not) for ``systemctl status``. While a supervised
task keeps failing (:mod:`gateway.runtime.supervisor`) the pings stop, so systemd restarts the process. A send that fails is
dropped: systemd's side going away must never take the gateway down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 400


def _address(name: str) -> str | bytes:
    """``@name`` -> the abstract socket ``\\0name``; a path is used as it is."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """Half the watchdog timeout systemd asks for, or None when it asks for none (or for another
    process: ``WATCHDOG_PID`` names the one it watches)."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 2e6


class Notifier:
    def __init__(self, socket_name: str | None, watchdog_s: float | None = None) -> None:
        self.socket_name = socket_name or None
        self.watchdog_s = watchdog_s if self.socket_name else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), watchdog_interval_s(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.socket_name is not None

    def send(self, **fields: str) -> bool:
        """One datagram of ``KEY=value`` lines; False when it could not be sent (or nobody listens)."""
        if self.socket_name is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, _address(self.socket_name))
        except OSError as exc:  # systemd gone, or its queue full: never fatal for the gateway
            log.debug("sd_notify %s failed: %s", ",".join(fields), exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=_one_line(status), MAINPID=str(os.getpid()))

    def watchdog(self, status: str) -> bool:
        return self.send(WATCHDOG="1", STATUS=_one_line(status))

    def stopping(self) -> bool:
        return self.send(STOPPING="1", STATUS="stopping")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_STATUS_CHARS]


async def watchdog_loop(
    notifier: Notifier,
    status: Callable[[], Awaitable[str]],
    failing: Callable[[], Sequence[str]] = tuple,
) -> None:
    """Ping the watchdog from the event loop every half timeout, with a fresh STATUS line; while a
    supervised task keeps failing (``failing`` names it) send only the STATUS line, no ping, so
    systemd restarts the process once ``WatchdogSec`` passes."""
    if notifier.watchdog_s is None:
        return
    interval = notifier.watchdog_s
    loop = asyncio.get_running_loop()
    while True:
        begun = loop.time()
        try:
            line = await asyncio.wait_for(status(), timeout=interval / 2)
        except TimeoutError:
            line = "status check timed out"
        if failing():
            notifier.send(STATUS=_one_line(line))
        else:
            notifier.watchdog(line)
        await asyncio.sleep(max(0.0, interval - (loop.time() - begun)))

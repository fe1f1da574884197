"""Accepting TCP connections so that running out of descriptors pauses us instead of spinning us.

asyncio's own accept loop (``BaseSelectorEventLoop._accept_connection`` in CPython 3.11) handles
EMFILE/ENFILE/ENOBUFS/ENOMEM by calling the loop's exception handler (a traceback in the log),
removing the reader and scheduling a retry one second later; but it does that inside
``for _ in range(backlog)``, so it keeps calling ``accept()`` after the first failure: one wake-up
logs up to ``backlog`` tracebacks and schedules as many retries, every second, for as long as the
descriptors stay used up (with our backlog of 1,024: 288k log lines and 85% CPU in one test).

``Acceptor`` owns the listening sockets instead and keeps asyncio's transports for the rest
(``loop.connect_accepted_socket``, which also runs the TLS handshake, with its timeout):

- on a resource error it stops accepting on all its sockets for a short pause that grows while the
  errors last (:class:`AcceptBackoff`, a pure object fed ``now``) and resets after an accept works;
  pending clients wait in the kernel's backlog meanwhile;
- it logs at most one line per ``log_interval_s`` with the number of failures since the last
  line, and one line when accepting works again;
- before handing a connection over it asks its owner whether to take it (``admit``); a refused
  socket is closed at once, after an optional short message (``refusal``, e.g. an HTTP 503),
  without ever reaching a protocol.

What it leaves to its owner: what a connection means (the protocol factory), how many are alive
and which one to drop (``admit``), and the listening sockets' options (:func:`bind_sockets`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

log = logging.getLogger(__name__)

RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BATCH = 128  # accepts per wake-up, so one busy listener cannot starve the loop


@dataclass
class AcceptBackoff:
    """When to try ``accept()`` again after a resource error, and when to say so in the log.

    Pure: time comes in as ``now``. The pause doubles from ``initial_s`` up to ``max_s`` while the
    errors last; a successful accept resets it. Failures are counted and reported at most once
    per ``log_interval_s`` (the first failure of a streak is reported at once).
    """

    initial_s: float = 0.05
    max_s: float = 2.0
    log_interval_s: float = 10.0
    delay_s: float = 0.0
    unreported: int = 0
    streak: int = 0
    last_report: float = float("-inf")

    def failed(self, now: float) -> tuple[float, int]:
        """A resource error now: (pause before the next accept, failures to log now or 0)."""
        self.delay_s = self.initial_s if self.delay_s == 0 else min(self.max_s, self.delay_s * 2)
        self.unreported += 1
        self.streak += 1
        report = 0
        if now - self.last_report >= self.log_interval_s:
            report, self.unreported, self.last_report = self.unreported, 0, now
        return self.delay_s, report

    def succeeded(self) -> int:
        """An accept worked: the length of the streak of failures it ends (0: there was none)."""
        streak, self.streak, self.delay_s, self.unreported = self.streak, 0, 0.0, 0
        return streak


def _binding_limit(exc: OSError) -> str:
    """Where the descriptor limit binds, the words that say so (empty for other resource errors)."""
    if exc.errno != errno.EMFILE:
        return ""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f": the file descriptor limit {soft} binds; raise LimitNOFILE or lower the connection caps"


def raise_descriptor_limit(wanted: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``wanted`` (never past the hard limit, never down),
    as Go's runtime and nginx's ``worker_rlimit_nofile`` do; returns the soft limit now in force.

    A shell's default soft limit (1,024) is far below what the connection caps allow, while the
    hard limit is usually much higher; only the hard limit is the administrator's decision.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.debug("cannot raise RLIMIT_NOFILE to %d: %s", target, exc)
    return soft


def bind_sockets(host: str, port: int, *, backlog: int) -> list[socket.socket]:
    """Listening, non-blocking sockets for ``host:port`` (every address ``host`` resolves to),
    with the options ``loop.create_server(reuse_address=True)`` would set; raises OSError."""
    host_arg = None if host in ("", "0.0.0.0") else host
    family = socket.AF_INET if host in ("", "0.0.0.0") else socket.AF_UNSPEC
    infos = socket.getaddrinfo(host_arg, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    made: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for fam, kind, proto, _, address in infos:
            if (fam, address) in seen:
                continue
            seen.add((fam, address))
            sock = socket.socket(fam, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in made:
            sock.close()
        raise
    return made


class Acceptor:
    """Accepts on ``sockets`` and hands each admitted connection to ``protocol_factory``.

    ``admit()`` is asked once per accepted socket, before any protocol exists: False closes the
    socket at once (``refusal`` is sent first on plain TCP, best effort). ``on_failed(protocol)``
    is told when a protocol was made but never connected (a failed TLS handshake), so an owner
    that counts protocols can count it out. ``count(name)`` is called for each
    ``<name>.accept_errors`` and ``<name>.refused_full``. Quacks enough like ``asyncio.Server`` (``sockets``, ``close``,
    ``wait_closed``) for aiohttp's runner to list its addresses and stop it.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        name: str,
        admit: Callable[[], bool] = lambda: True,
        refusal: bytes = b"",
        on_failed: Callable[[asyncio.BaseProtocol], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout_s: float | None = None,
        backoff: AcceptBackoff | None = None,
        count: Callable[[str], None] = lambda _name: None,
    ) -> None:
        self._sockets = sockets
        self._factory = protocol_factory
        self.name = name
        self._admit = admit
        self._refusal = refusal if ssl_context is None else b""
        self._on_failed = on_failed
        self._ssl = ssl_context
        self._handshake_timeout_s = ssl_handshake_timeout_s
        self.backoff = backoff or AcceptBackoff()
        self._count = count
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._resume: asyncio.TimerHandle | None = None
        self._connecting: dict[asyncio.Task[None], socket.socket] = {}  # oldest first
        self.accept_errors = 0
        self.refused_full = 0

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    @property
    def connecting(self) -> int:
        """Connections accepted whose transport is not made yet (TLS handshakes in progress)."""
        return len(self._connecting)

    def cancel_oldest(self) -> bool:
        """Give up the connection that has been in its TLS handshake longest; False: there is none."""
        for task in self._connecting:
            del self._connecting[task]
            task.cancel()
            return True
        return False

    def start(self) -> None:
        if self._reading or not self._sockets:
            return
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)
        self._reading = True

    def _pause(self) -> None:
        if self._reading:
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())
            self._reading = False

    def close(self) -> None:
        """Stop accepting and close the listening sockets (live connections are not touched)."""
        self._pause()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        for task in list(self._connecting):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._connecting:
            await asyncio.wait(list(self._connecting), timeout=5.0)

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while in the backlog
            except OSError as exc:
                self._failed(exc)
                return
            streak = self.backoff.succeeded()
            if streak:
                log.warning("%s: accepting connections again after %d failed accepts", self.name, streak)
            self._take(conn)

    def _failed(self, exc: OSError) -> None:
        self.accept_errors += 1
        self._count(f"{self.name}.accept_errors")
        # Resource errors are the expected ones; anything else gets the same pause and the same
        # rate-limited line, so that it cannot spin the loop either.
        delay, report = self.backoff.failed(self._loop.time())
        if report:
            log.error(
                "%s: %d accept() failures (%s%s); pausing accepts for %.2f s at a time until they stop",
                self.name,
                report,
                exc.strerror or exc,
                _binding_limit(exc) if exc.errno in RESOURCE_ERRORS else ", unexpected",
                delay,
            )
        self._pause()
        self._resume = self._loop.call_later(delay, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._resume = None
        if self._sockets:
            self.start()

    def _take(self, conn: socket.socket) -> None:
        try:
            admitted = self._admit()
        except Exception:
            log.exception("%s: admission check failed; closing the connection", self.name)
            admitted = False
        if not admitted:
            self.refused_full += 1
            self._count(f"{self.name}.refused_full")
            if self._refusal:
                try:
                    conn.setblocking(False)
                    conn.send(self._refusal)
                except OSError:
                    pass
            conn.close()
            return
        conn.setblocking(False)
        task = self._loop.create_task(self._connect(conn), name=f"{self.name} connect")
        self._connecting[task] = conn
        task.add_done_callback(partial(self._done, conn))

    def _done(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        self._connecting.pop(task, None)
        if task.cancelled():
            conn.close()  # cancelled before it ran: nobody else will close it

    async def _connect(self, conn: socket.socket) -> None:
        protocol = self._factory()
        try:
            await self._loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout_s if self._ssl else None,
            )
        except (OSError, ssl.SSLError, TimeoutError, asyncio.CancelledError) as exc:
            conn.close()
            if self._on_failed is not None:
                self._on_failed(protocol)
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.debug("%s: connection failed before it started: %r", self.name, exc)

"""A leaner amqtt ``Session``: the per-device state the broker keeps, connected or not.

amqtt's ``Session`` builds a ``transitions.Machine`` (a state-machine object graph of several KB)
and two unbounded ``asyncio.Queue`` objects (four deques each) for every client. With thousands of
idle devices those dominate the broker's memory, and an unbounded queue for an offline subscriber
is a memory leak with extra steps. This subclass keeps amqtt's attributes and their meaning but
replaces:

- the state machine by four plain members (``state``, ``connect``, ``disconnect``,
  ``is_connected``) with the connect/disconnect timestamps amqtt's expiry monitor reads;
- ``retained_messages`` (messages kept for an offline persistent session) by ``OfflineQueue``, a bounded
  deque that drops the oldest message when full and counts it;
- ``delivered_message_queue`` by nothing: our connection hands messages over directly;
- the two in-flight tables: ``inflight_out`` is made when a message is first sent to the client,
  ``inflight_in`` (QoS 2 towards a client) is an empty read-only mapping, as we grant QoS 1 at most;
  and the attributes amqtt sets that never change here are class attributes.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from math import floor
from types import MappingProxyType
from typing import Any

from amqtt.session import Session


class OfflineQueue:
    """Messages for an offline persistent session: at most ``limit``, the oldest go first.

    Quacks like the parts of ``asyncio.Queue`` amqtt uses (``qsize``, ``empty``, ``get_nowait``,
    ``put_nowait``); the deque is only allocated once something is queued.
    """

    __slots__ = ("_items", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Any] | None = None
        self.dropped = 0

    def put_nowait(self, item: Any) -> bool:
        """Queue ``item``; returns False when that pushed the oldest message out."""
        if self._items is None:
            self._items = deque(maxlen=self.limit)
        full = len(self._items) >= self.limit
        if full:
            self.dropped += 1
        self._items.append(item)
        return not full

    def get_nowait(self) -> Any:
        if not self._items:
            raise IndexError("offline queue is empty")
        return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items


class LeanSession(Session):
    """amqtt's ``Session`` without the per-session state machine and unbounded queues.

    ``transitions`` is the session itself (a property, so no reference cycle keeps a closed
    session alive until the cyclic collector runs): it has the ``state``, ``connect``,
    ``disconnect`` and ``is_connected`` amqtt reads, and keeps the connect/disconnect timestamps
    amqtt's session-expiry monitor uses.
    """

    # What amqtt's ``Session.__init__`` sets and nobody here changes from its default: class
    # attributes, so a session's own ``__dict__`` holds only what differs (thousands of sessions).
    remote_address: str | None = None  # not kept: the connection logs its peer itself
    remote_port: int | None = None
    publish_retry_delay = 0
    broker_uri: str | None = None
    cafile: str | None = None
    capath: str | None = None
    cadata: bytes | None = None
    ssl_object: Any = None
    is_anonymous = False
    parent = 0
    inflight_in: Mapping[int, Any] = MappingProxyType({})  # QoS 2 to a client: we grant at most 1

    def __init__(self, queue_limit: int) -> None:  # amqtt's __init__ not called: see above
        self.state = "new"
        self.last_connect_time: int | None = None
        self.last_disconnect_time: int | None = None
        self.client_id: str | None = None
        self.clean_session: bool | None = None
        self.will_flag = False
        self.will_message: bytes | bytearray | None = None
        self.will_qos: int | None = None
        self.will_retain: bool | None = None
        self.will_topic: str | None = None
        self.keep_alive = 0
        self.username: str | None = None
        self.password: str | None = None
        self._packet_id = 0
        self.attributes: dict[str, Any] = {}
        self._inflight_out: OrderedDict[int, Any] | None = None  # made when first needed
        self.retained_messages = OfflineQueue(queue_limit)
        self.delivered_message_queue = None  # never used: see module docstring

    @property
    def inflight_out(self) -> OrderedDict[int, Any]:
        """QoS 1 messages sent to this client and not acknowledged yet, oldest first."""
        if self._inflight_out is None:
            self._inflight_out = OrderedDict()
        return self._inflight_out

    def unacknowledged(self) -> list[tuple[int, Any]]:
        """(packet id, message) sent and not acknowledged, oldest first, without making the table."""
        return list(self._inflight_out.items()) if self._inflight_out else []

    def acknowledged(self, packet_id: int) -> None:
        if self._inflight_out:
            self._inflight_out.pop(packet_id, None)

    def _init_states(self) -> None:
        pass  # no transitions.Machine

    @property
    def transitions(self) -> LeanSession:
        return self

    def connect(self) -> None:
        self.state = "connected"
        self.last_connect_time = floor(time.time())
        self.last_disconnect_time = None

    def disconnect(self) -> None:
        if self.state != "disconnected":
            self.last_disconnect_time = floor(time.time())
        self.state = "disconnected"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def clear_queues(self) -> None:
        self.retained_messages = OfflineQueue(self.retained_messages.limit)

    def __getstate__(self) -> dict[str, Any]:  # pragma: no cover - we never pickle sessions
        raise TypeError("LeanSession is not picklable")

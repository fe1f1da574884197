"""The embedded broker against real clients: mosquitto_pub/mosquitto_sub, paho-mqtt, raw sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as paho
import psutil
import pytest

from gateway.broker import wire
from tests.broker.conftest import (
    Running,
    closed_by_peer,
    raw_connect_packet,
    run,
    until,
)

pytestmark = pytest.mark.peer


class Paho:
    """A paho-mqtt client on its own network thread; the test awaits its events."""

    def __init__(
        self, port: int, client_id: str, user: str | None, password: str | None, clean: bool = True
    ) -> None:
        self.port = port
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=paho.MQTTv311
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connack: list[Any] = []
        self.granted: list[list[int]] = []
        self.messages: list[tuple[str, bytes]] = []
        self.disconnected = threading.Event()
        self.client.on_connect = lambda c, u, flags, rc, props: self.connack.append(rc)
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.granted.append(
            [int(x.value) for x in codes]
        )
        self.client.on_message = lambda c, u, msg: self.messages.append((msg.topic, msg.payload))
        self.client.on_disconnect = lambda c, u, flags, rc, props: self.disconnected.set()

    async def connect(self) -> None:
        await asyncio.to_thread(self.client.connect, "127.0.0.1", self.port, 30)
        self.client.loop_start()
        await until(lambda: self.connack or self.disconnected.is_set(), what="CONNACK")

    async def close(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


@pytest.fixture
async def clients() -> Any:
    made: list[Paho] = []

    async def make(
        port: int, client_id: str, user: str | None, password: str | None, clean: bool = True
    ) -> Paho:
        c = Paho(port, client_id, user, password, clean)
        made.append(c)
        await c.connect()
        return c

    yield make
    for c in made:
        await c.close()


# -- identity ------------------------------------------------------------------------------------


async def test_metrics_from_mosquitto_pub_reach_the_hook(running: Running) -> None:
    rc, out = await run(
        "mosquitto_pub", "-p", str(running.port), "-u", "dev1", "-P", "tok1", "-q", "1",
        "-t", "devices/dev1/metrics", "-m", '{"device_id": "dev1"}',
    )  # fmt: skip
    assert rc == 0, out
    assert running.received == [("dev1", "devices/dev1/metrics", b'{"device_id": "dev1"}')]
    assert running.broker.stats()["accepted"] == 1


@pytest.mark.parametrize(
    ("creds", "message"),
    [
        (["-u", "dev1", "-P", "wrong"], "bad user name or password"),
        ([], "not authorised"),
        (["-u", "dev1"], "bad user name or password"),
        (["-u", "nobody", "-P", "tok1"], "bad user name or password"),
    ],
)
async def test_wrong_or_missing_credentials_are_refused(
    running: Running, creds: list[str], message: str
) -> None:
    rc, out = await run(
        "mosquitto_pub", "-p", str(running.port), *creds, "-q", "1", "-t", "devices/dev1/metrics", "-m", "x"
    )
    assert rc != 0
    assert message in out.lower()
    assert running.received == []
    assert running.broker.stats()["refused"] == 1


async def test_only_our_plugins_are_loaded(running: Running) -> None:
    core = running.broker._core
    assert core is not None
    names = sorted(type(p).__name__ for p in core.plugins_manager.plugins)
    assert names == ["DeviceAuthPlugin", "DeviceTopicPlugin"]  # no AnonymousAuthPlugin, no $SYS


async def test_lab_mode_lets_anonymous_clients_in_by_client_id(
    start_broker: Callable[..., Awaitable[Running]],
) -> None:
    lab = await start_broker(lab_mode=True)
    rc, out = await run(
        "mosquitto_pub",
        "-p",
        str(lab.port),
        "-i",
        "bench-7",
        "-q",
        "1",
        "-t",
        "devices/bench-7/metrics",
        "-m",
        "x",
    )
    assert rc == 0, out
    assert lab.received == [("bench-7", "devices/bench-7/metrics", b"x")]
    # credentials, when given, are still checked in lab mode
    rc, out = await run(
        "mosquitto_pub",
        "-p",
        str(lab.port),
        "-u",
        "dev1",
        "-P",
        "no",
        "-t",
        "devices/dev1/metrics",
        "-m",
        "x",
    )
    assert rc != 0


# -- topics --------------------------------------------------------------------------------------


async def test_publish_under_another_device_is_refused_and_disconnects(
    running: Running, clients: Any
) -> None:
    dev1 = await clients(running.port, "dev1", "dev1", "tok1")
    info = dev1.client.publish("devices/dev2/metrics", b"spoof", qos=1)
    await until(dev1.disconnected.is_set, what="disconnect after a refused PUBLISH")
    assert not info.is_published()  # no PUBACK: the device knows it was not accepted
    assert running.received == []
    assert running.broker.stats()["publish_refused"] == 1


async def test_subscriptions_outside_own_subtree_get_0x80(running: Running, clients: Any) -> None:
    dev1 = await clients(running.port, "dev1", "dev1", "tok1")
    dev1.client.subscribe([("#", 1), ("devices/+/metrics", 1), ("devices/dev2/#", 1), ("devices/dev1/#", 1)])
    await until(lambda: dev1.granted, what="SUBACK")
    assert dev1.granted == [[0x80, 0x80, 0x80, 1]]
    assert running.broker.stats()["subscribe_refused"] == 3
    assert not dev1.disconnected.is_set()
    # the allowed subscription works: the gateway tells dev1 about an update
    await running.broker.publish("devices/dev1/updates", b'{"version": "2"}', qos=1)
    await running.broker.publish("devices/dev2/updates", b"not for dev1", qos=1)
    await until(lambda: dev1.messages, what="update")
    assert dev1.messages == [("devices/dev1/updates", b'{"version": "2"}')]


async def test_mosquitto_sub_receives_its_updates(running: Running) -> None:
    sub = asyncio.create_task(
        run(
            "mosquitto_sub", "-p", str(running.port), "-u", "dev2", "-P", "tok2", "-i", "dev2",
            "-t", "devices/dev2/updates", "-q", "1", "-C", "1", "-W", "10",
        )
    )  # fmt: skip
    await until(lambda: running.broker.connected("dev2") and running.broker._core.device_filters, what="sub")  # type: ignore[union-attr]
    await running.broker.publish("devices/dev2/updates", b"model 3", qos=1)
    rc, out = await sub
    assert rc == 0, out
    assert out.strip() == "model 3"


async def test_offline_queue_is_bounded_oldest_dropped(
    start_broker: Callable[..., Awaitable[Running]], clients: Any
) -> None:
    r = await start_broker(max_queued_messages=3)
    dev3 = await clients(r.port, "dev3", "dev3", "tok3", clean=False)
    dev3.client.subscribe("devices/dev3/updates", qos=1)
    await until(lambda: dev3.granted, what="SUBACK")
    await dev3.close()
    await until(lambda: not r.broker.connected("dev3"), what="offline")
    for i in range(5):
        await r.broker.publish("devices/dev3/updates", f"u{i}".encode(), qos=1)
    await until(lambda: r.broker.stats()["queue_dropped"] == 2, what="drops")
    again = await clients(r.port, "dev3", "dev3", "tok3", clean=False)
    await until(lambda: len(again.messages) == 3, what="queued messages")
    assert [p for _, p in again.messages] == [b"u2", b"u3", b"u4"]


async def test_a_device_cannot_take_over_another_devices_client_id(running: Running, clients: Any) -> None:
    dev1 = await clients(running.port, "dev1", "dev1", "tok1")
    intruder = await clients(running.port, "dev1", "dev2", "wrong")
    assert intruder.connack and intruder.connack[0] != 0
    same_id = await clients(running.port, "dev1", "dev2", "tok2")  # right token, dev1's client id
    assert same_id.connack == [0]
    assert not dev1.disconnected.is_set()
    assert running.broker.connected("dev1") and running.broker.connected("dev2")
    # and the second connection of dev1 itself does take the first one over [MQTT-3.1.4-2]
    await clients(running.port, "dev1", "dev1", "tok1")
    await until(dev1.disconnected.is_set, what="take-over")


# -- bounds --------------------------------------------------------------------------------------


async def test_hostile_clients_drop_alone_and_the_broker_stays_up(
    start_broker: Callable[..., Awaitable[Running]], raw_socket: Any
) -> None:
    r = await start_broker(max_packet_bytes=4096, connect_timeout_s=0.5)
    good = await raw_socket(r.port)
    good.sendall(raw_connect_packet("dev1", "dev1", "tok1"))
    assert (await asyncio.to_thread(good.recv, 4)) == bytes((0x20, 2, 0, 0))

    garbage = await raw_socket(r.port)
    garbage.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n".ljust(128, b"x"))  # 'G' = 0x47: no CONNECT
    await closed_by_peer(garbage)

    bogus_length = await raw_socket(r.port)
    bogus_length.sendall(
        raw_connect_packet("dev2", "dev2", "tok2") + bytes((0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F))
    )
    assert (await closed_by_peer(bogus_length))[:4] == bytes((0x20, 2, 0, 0))

    silent = await raw_socket(r.port)  # connects, then says nothing: dropped after connect_timeout_s
    await closed_by_peer(silent)

    second_connect = await raw_socket(r.port)
    second_connect.sendall(raw_connect_packet("dev3", "dev3", "tok3") * 2)
    await closed_by_peer(second_connect)

    stats = r.broker.stats()
    assert stats["malformed"] >= 3 and stats["timeouts"] == 1
    # the first client never noticed: it still gets its PINGRESP
    good.sendall(bytes((0xC0, 0)))
    assert (await asyncio.to_thread(good.recv, 2)) == wire.PINGRESP_BYTES
    rc, out = await run(
        "mosquitto_pub", "-p", str(r.port), "-u", "dev1", "-P", "tok1", "-q", "1", "-i", "x",
        "-t", "devices/dev1/metrics", "-m", "still here",
    )  # fmt: skip
    assert rc == 0, out


async def test_a_50mb_publish_is_refused_before_it_is_buffered(
    start_broker: Callable[..., Awaitable[Running]], raw_socket: Any
) -> None:
    r = await start_broker(max_packet_bytes=64 << 10)
    me = psutil.Process()
    big = 50 << 20
    sock = await raw_socket(r.port)
    sock.sendall(raw_connect_packet("dev1", "dev1", "tok1"))
    assert (await asyncio.to_thread(sock.recv, 4))[:1] == b"\x20"
    rss_before = me.memory_info().rss

    def flood() -> int:
        sent = 0
        topic = b"devices/dev1/metrics"
        header = bytes((0x32,)) + wire.encode_remaining_length(big + 2 + len(topic) + 2)
        chunk = b"\0" * (1 << 20)
        try:
            sock.sendall(header + len(topic).to_bytes(2, "big") + topic + b"\x00\x01")
            while sent < big:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        return sent

    sent = await asyncio.to_thread(flood)
    await until(lambda: r.broker.stats()["oversized"] == 1, what="oversized count")
    assert sent < big  # the broker hung up long before 50 MB
    assert me.memory_info().rss - rss_before < 8 << 20
    assert r.received == []


async def test_max_connections_refuses_the_next_one(
    start_broker: Callable[..., Awaitable[Running]], raw_socket: Any
) -> None:
    r = await start_broker(max_connections=2)
    socks = [await raw_socket(r.port) for _ in range(2)]
    for i, s in enumerate(socks):
        s.sendall(raw_connect_packet(f"c{i}", "dev1", "tok1"))
        assert (await asyncio.to_thread(s.recv, 4)) == bytes((0x20, 2, 0, 0))
    extra = await raw_socket(r.port)  # the cap counts authenticated clients: refused at CONNECT
    extra.sendall(raw_connect_packet("c9", "dev1", "tok1"))
    assert await closed_by_peer(extra) == bytes((0x20, 2, 0, 3))  # server unavailable
    assert r.broker.stats()["refused_full"] == 1
    socks[0].close()
    await until(lambda: r.broker.stats()["connections"] == 1, what="slot freed")
    rc, out = await run(
        "mosquitto_pub", "-p", str(r.port), "-u", "dev1", "-P", "tok1", "-t", "devices/dev1/x", "-m", "y"
    )
    assert rc == 0, out

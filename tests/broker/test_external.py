"""``mqtt.mode = "external"`` against a real mosquitto (Debian) with a password file and the ACL
pattern the README documents.

- the ACL pattern keeps each device to its own topics, the gateway reads every device's metrics
  and events through its shared subscription, and its notices reach the device they name only;
- a message is acknowledged to the broker (and so to the device, at mosquitto's PUBACK) only once
  the ingest hook's durable future resolves, and one whose journal fails comes again;
- the whole story with the real gateway process: devices publish at random instants while the
  broker is restarted (persistence on, same port) and the gateway is kill -9'ed; every message a
  device got a PUBACK for is in the outbox. ``GATE_EXTERNAL=N`` runs N seeds (default 1; `.ci/run` runs more).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from gateway.broker.external import ExternalBroker
from gateway.core.settings import MqttSettings
from tests.broker.conftest import until
from tests.conftest import Registry
from tests.gw import gateway_settings, running
from tests.ops.test_metrics import EXTERNAL_ONLY, dashboard_names, exposed_names, families, one, scrape
from tests.peers import free_port, gateway_process, need, stop, wait_port

pytestmark = pytest.mark.peer

GATEWAY_PASSWORD = "gw-secret"
DEVICES = {f"cam-{i}": f"pw-{i}" for i in range(1, 5)}

# What the README tells an installer to put in the site broker's ACL file.
ACL = """\
# the gateway: every device's metrics, events and samples in, update notices out
user ota-gateway
topic read devices/+/metrics
topic read devices/+/events
topic read devices/+/samples
topic write devices/+/updates

# every device (user name = device id): its own subtree only
pattern readwrite devices/%u/#
"""


@dataclass
class Mosquitto:
    """Debian's mosquitto on a fixed free port, persistence on, our password and ACL files."""

    work: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def make(cls, work: Path) -> Mosquitto:
        m = cls(work)
        m.write()
        return m

    def write(self) -> None:
        self.work.mkdir(exist_ok=True)
        passwd = self.work / "passwd"
        passwd.touch()
        for user, password in {"ota-gateway": GATEWAY_PASSWORD, **DEVICES}.items():
            subprocess.run([need("mosquitto_passwd"), "-b", str(passwd), user, password], check=True)
        (self.work / "acl").write_text(ACL)
        (self.work / "db").mkdir(exist_ok=True)
        (self.work / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"  # as root mosquitto would switch to its own user: keep ours
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            f"acl_file {self.work / 'acl'}\n"
            "persistence true\n"
            f"persistence_location {self.work / 'db'}/\n"
            "max_queued_messages 100000\n"  # the gateway's session while it is away
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [need("mosquitto"), "-c", str(self.work / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file on the way out."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    m = Mosquitto.make(tmp_path / "mosquitto")
    m.start()
    try:
        yield m
    finally:
        m.stop()


def settings(m: Mosquitto, **kw: Any) -> MqttSettings:
    url = f"mqtt://ota-gateway:{GATEWAY_PASSWORD}@127.0.0.1:{m.port}"
    return replace(MqttSettings(mode="external", external_url=url), **kw)


class Device:
    """A paho MQTT 5 device: what it published, what the broker acknowledged, what it received."""

    def __init__(self, device_id: str, port: int, password: str | None = None) -> None:
        self.id = device_id
        self.loop = asyncio.get_running_loop()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(device_id, password if password is not None else DEVICES.get(device_id))
        self.connack: list[Any] = []
        self.acked: dict[int, int] = {}  # mid -> reason code
        self.subacks: list[list[int]] = []
        self.received: list[tuple[str, bytes]] = []
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self._call(self.connack.append, rc)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self._call(self.acked.__setitem__, mid, rc.value)
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self._call(
            self.subacks.append, [r.value for r in rcs]
        )
        self.client.on_message = lambda _c, _u, m: self._call(self.received.append, (m.topic, m.payload))
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def publish(self, topic: str, body: dict[str, Any]) -> int:
        return self.client.publish(topic, json.dumps(body), qos=1).mid

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def metrics(value: float) -> dict[str, Any]:
    return {"model_id": "detector", "model_version": "1.0.0", "num_inferences": 10, "num_errors": 0,
            "avg_latency_ms": value}  # fmt: skip


@pytest.fixture
async def devices() -> AsyncIterator[Callable[..., Device]]:
    made: list[Device] = []

    def make(device_id: str, port: int, password: str | None = None) -> Device:
        made.append(Device(device_id, port, password))
        return made[-1]

    yield make
    for d in made:
        d.close()


async def test_the_acl_pattern_keeps_each_device_to_its_own_topics(
    mosquitto: Mosquitto, devices: Callable[..., Device]
) -> None:
    got: list[tuple[str, str, bytes]] = []
    ext = ExternalBroker(
        settings(mosquitto, external_shared_group="ota-gateway"),  # the ACL holds for $share/ too
        "ota-gateway-test",
        lambda d, t, p: got.append((d, t, p)),
    )
    await ext.start()
    try:
        await until(ext.ready.is_set, what="the gateway subscribed")
        cam1 = devices("cam-1", mosquitto.port)
        cam2 = devices("cam-2", mosquitto.port)
        thief = devices("cam-3", mosquitto.port, password="wrong")
        await until(lambda: cam1.connack and cam2.connack and thief.connack, what="CONNACKs")
        assert not cam1.connack[0].is_failure and not cam2.connack[0].is_failure
        assert thief.connack[0].is_failure  # the password file holds

        cam1.client.subscribe("devices/cam-1/updates", qos=1)
        cam2.client.subscribe("devices/+/metrics", qos=1)  # granted, but only its own is delivered
        cam2.client.subscribe("devices/cam-1/updates", qos=1)
        cam2.client.subscribe("devices/cam-2/updates", qos=1)
        await until(lambda: len(cam1.subacks) == 1 and len(cam2.subacks) == 3, what="SUBACKs")
        assert cam1.subacks[0] == [1]
        assert cam2.subacks[2] == [1]  # mosquitto 2 grants a filter and checks each message's topic

        own = cam1.publish("devices/cam-1/metrics", metrics(1.0))
        cam1.publish("devices/cam-2/metrics", metrics(2.0))  # speaking for another device
        cam1.publish("devices/cam-1/events", {"event": "healthy", "model_id": "detector", "version": "1.0.0"})
        cam2.publish("devices/cam-2/metrics", metrics(3.0))
        await until(lambda: own in cam1.acked and len(got) >= 3, what="the gateway's ingest")
        assert sorted((d, t) for d, t, _ in got) == [
            ("cam-1", "devices/cam-1/events"),
            ("cam-1", "devices/cam-1/metrics"),
            ("cam-2", "devices/cam-2/metrics"),
        ]
        assert [json.loads(p)["avg_latency_ms"] for d, t, p in got if d == "cam-2"] == [3.0]

        await ext.publish("devices/cam-1/updates", b'{"rollback": true}')
        await ext.publish("devices/cam-2/updates", b'{"poll": true}')
        await until(lambda: cam1.received and cam2.received, what="the notices")
        assert cam1.received == [("devices/cam-1/updates", b'{"rollback": true}')]
        await until(lambda: ("devices/cam-2/updates", b'{"poll": true}') in cam2.received, what="cam-2's")
        # cam-2 read only its own subtree: its own metrics and notice, nothing of cam-1's
        assert sorted(t for t, _ in cam2.received) == ["devices/cam-2/metrics", "devices/cam-2/updates"]
    finally:
        await ext.stop()


async def test_messages_with_and_without_mqtt5_properties_arrive_alike(
    mosquitto: Mosquitto, devices: Callable[..., Device]
) -> None:
    """The external path reads a plain QoS 1 PUBLISH itself (no properties: nearly every message)
    and leaves the rest to gmqtt: both must hand the hook the same topic and bytes, and QoS 1 ones
    be acknowledged once the hook's future is done."""
    got: list[tuple[str, str, bytes]] = []
    ext = ExternalBroker(settings(mosquitto), "ota-gateway-test", lambda d, t, p: got.append((d, t, p)))
    await ext.start()
    try:
        await until(ext.ready.is_set, what="the gateway subscribed")
        cam = devices("cam-1", mosquitto.port)
        await until(lambda: cam.connack, what="the device connected")
        with_props = paho.Properties(PacketTypes.PUBLISH)
        with_props.UserProperty = [("site", "depot-7")]
        with_props.MessageExpiryInterval = 3600
        with_props.ContentType = "application/json"
        sent = []
        for i in range(40):
            body = json.dumps({**metrics(float(i)), "note": "é" * (i * 7)}).encode()  # lengths vary
            props = with_props if i % 3 == 0 else None
            cam.client.publish("devices/cam-1/metrics", body, qos=0 if i % 5 == 4 else 1, properties=props)
            sent.append(("cam-1", "devices/cam-1/metrics", body))
        await until(lambda: len(got) >= len(sent), what="every message at the hook")
        assert sorted(got) == sorted(sent)  # the same bytes (MQTT orders within a QoS level only)
        qos1 = sum(1 for i in range(40) if i % 5 != 4)  # acknowledged by the gateway to the broker
        await until(lambda: ext.stats()["acked"] == qos1, what="every QoS 1 message acknowledged")
        assert ext.stats()["unacknowledged"] == 0
    finally:
        await ext.stop()


async def test_samples_come_through_the_site_broker(
    mosquitto: Mosquitto, devices: Callable[..., Device], reg: Registry, tmp_path: Path
) -> None:
    """A device's sample on the site broker reaches the gateway's sample store (the README's ACL)."""
    s = gateway_settings(reg, tmp_path / "data", mqtt=settings(mosquitto), samples={"enabled": True})
    async with running(s) as gw:
        cam = devices("cam-1", mosquitto.port)
        body = {"reason": "error", "model_version": "1.0.0", "class": "person", "confidence": 0.2,
                "embedding": [0.5, 0.25]}  # fmt: skip
        await until(lambda: cam.connack, what="the device connected")
        cam.publish("devices/cam-1/samples", body)
        await until(lambda: gw.samples.status()["counts"].get("kept") == {"error": 1}, what="the sample kept")
        cam.publish("devices/cam-2/samples", body)  # another device's topic: mosquitto drops it
        cam.publish("devices/cam-1/samples", {**body, "embedding": [1.0]})
        await until(lambda: gw.samples.status()["counts"].get("kept") == {"error": 2}, what="the second")
        assert gw.samples.status()["counts"].get("duplicate") is None


async def test_metrics_show_the_link_to_the_site_broker(
    mosquitto: Mosquitto, devices: Callable[..., Device], reg: Registry, tmp_path: Path
) -> None:
    """``/metrics`` in external mode: connected, what waits for its commit, what was acknowledged
    (the device's messages, counted once each), and the window's stops (none at this rate)."""
    token = "operator-token"
    s = gateway_settings(
        reg, tmp_path / "data", mqtt=settings(mosquitto), operator={"listen": "127.0.0.1:0", "token": token}
    )
    async with running(s) as gw:
        cam = devices("cam-1", mosquitto.port)
        await until(lambda: cam.connack, what="the device connected")
        await until(lambda: gw.broker is not None and gw.broker.stats()["connected"] == 1, what="subscribed")
        mids = [cam.publish("devices/cam-1/metrics", metrics(float(i))) for i in range(3)]
        await until(lambda: all(cam.acked.get(m) == 0 for m in mids), what="the PUBACKs")
        await until(lambda: gw.broker is not None and gw.broker.stats()["acked"] == 3, what="acknowledged")
        status, _, text = await scrape(gw, token)
        assert status == 200
        fams = families(text)
        assert one(fams, "ota_gateway_mqtt_external_connected") == 1
        assert one(fams, "ota_gateway_mqtt_external_unacknowledged") == 0
        assert one(fams, "ota_gateway_mqtt_external_acked") == 3
        assert one(fams, "ota_gateway_mqtt_external_dropped_on_reconnect") == 0
        assert one(fams, "ota_gateway_mqtt_external_window_full") == 0
        assert one(fams, "ota_gateway_mqtt_messages", direction="received") == 3
        # the Grafana dashboard's external-mode panel queries only names exposed here
        external = {n for n in dashboard_names() if n.startswith(EXTERNAL_ONLY)}
        assert external and external <= exposed_names(text), external - exposed_names(text)


async def test_a_message_is_acknowledged_only_once_durable(
    mosquitto: Mosquitto, devices: Callable[..., Device]
) -> None:
    """The hook's future stands for the outbox commit: the gateway's PUBACK to the site broker
    waits for it, in arrival order, and a message never made durable is never acknowledged: the
    broker keeps it in the gateway's session and sends it again on the next connection."""
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[int]] = []
    taken: list[float] = []

    def hook(_d: str, _t: str, payload: bytes) -> asyncio.Future[int]:
        taken.append(json.loads(payload)["avg_latency_ms"])
        pending.append(loop.create_future())
        return pending[-1]

    ext = ExternalBroker(settings(mosquitto, external_receive_max=10), "ota-gateway-test", hook)
    await ext.start()
    cam = devices("cam-1", mosquitto.port)
    try:
        await until(ext.ready.is_set, what="subscribed")
        for i in range(5):
            cam.publish("devices/cam-1/metrics", metrics(float(i)))
        await until(lambda: len(pending) == 5, what="five messages taken")
        assert ext.stats()["unacknowledged"] == 5 and ext.stats()["acked"] == 0
        pending[1].set_result(1)  # the second is durable but not the first: acks keep their order
        await asyncio.sleep(0)
        assert ext.stats()["acked"] == 0
        pending[0].set_result(1)
        await until(lambda: ext.stats()["acked"] == 2, what="the first two acknowledged")
        pending[2].set_exception(OSError("disk full"))  # never durable: never acknowledged
        for f in pending[3:]:
            f.set_result(1)
        await until(lambda: ext.stats()["acked"] == 4, what="the durable ones acknowledged")
    finally:
        await ext.stop()
    # Only message 2 is still the broker's to deliver: the next connection of our client id gets it.
    again: list[float] = []
    ext = ExternalBroker(
        settings(mosquitto),
        "ota-gateway-test",
        lambda _d, _t, p: again.append(json.loads(p)["avg_latency_ms"]),
    )
    await ext.start()
    try:
        await until(lambda: again, what="the unacknowledged message again")
        await until(lambda: ext.stats()["acked"] >= 1, what="acknowledged this time")
        assert again == [2.0]
    finally:
        await ext.stop()


async def test_a_broker_that_overruns_our_window_is_read_no_further_until_commits_free_it(
    mosquitto: Mosquitto, devices: Callable[..., Device]
) -> None:
    """Debian's mosquitto (2.0.11) sends past our Receive Maximum once acknowledgements flow: with
    a window of 10 and commits every 50 ms it had 1,000 messages out to us at once here (77,000 in
    the ingest benchmark, with a window of 1,000), each held in the gateway's memory until its
    commit. The gateway stops reading its socket while its window is full and reads on once
    commits have freed half of it, so what it holds is the window plus what reads had already
    brought (4 KB messages here: a read is at most 256 KB, and gmqtt's reader buffers up to 128 KB)."""
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[int]] = []
    window, sent = 10, 1500

    def hook(_d: str, _t: str, _payload: bytes) -> asyncio.Future[int]:
        pending.append(loop.create_future())
        return pending[-1]

    ext = ExternalBroker(settings(mosquitto, external_receive_max=window), "ota-gateway-test", hook)
    await ext.start()
    cam = devices("cam-1", mosquitto.port)
    try:
        await until(ext.ready.is_set, what="subscribed")
        await until(lambda: cam.connack, what="the device connected")
        most = 0
        for i in range(sent):
            cam.publish("devices/cam-1/metrics", {**metrics(float(i)), "note": "x" * 4000})
        while ext.stats()["acked"] < sent:  # commits come every 50 ms, each for all taken so far
            await asyncio.sleep(0.05)
            most = max(most, ext.stats()["unacknowledged"])
            for f in pending:
                if not f.done():
                    f.set_result(1)
        assert most <= window + (256 + 128) // 4 + 1
        assert ext.stats()["window_full"] >= 1
        assert len(pending) == sent and ext.stats()["unacknowledged"] == 0
    finally:
        await ext.stop()


# -- the whole story: the real gateway process, a broker restart, a kill -9 ------------------------


def start_gateway(
    data: Path, upstream: Path, m: Mosquitto, http: int, window: int = 1000
) -> subprocess.Popen[bytes]:
    env = {
        "OTA_GATEWAY_MQTT__MODE": "external",
        "OTA_GATEWAY_MQTT__EXTERNAL_URL": f"mqtt://ota-gateway:{GATEWAY_PASSWORD}@127.0.0.1:{m.port}",
        "OTA_GATEWAY_MQTT__EXTERNAL_RECEIVE_MAX": str(window),
        "OTA_GATEWAY_LOG_LEVEL": "warning",
    }
    args = ["--data", str(data), "--upstream", str(upstream), "--site", "test-site",
            "--http", f"127.0.0.1:{http}", "--operator", f"127.0.0.1:{free_port()}"]  # fmt: skip
    proc = gateway_process(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(http, 30)
    return proc


def in_outbox(data: Path) -> set[float]:
    """The samples' values the outbox holds (read-only, beside the running gateway)."""
    path = data / "outbox.sqlite"
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT body FROM records WHERE kind = 'sample'").fetchall()
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()
    return {json.loads(b)["latency_ms"] for (b,) in rows}


SEEDS = int(os.environ.get("GATE_EXTERNAL", "1"))


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_broker_restart_and_gateway_kill_lose_no_acknowledged_message(
    seed: int, tmp_path: Path, devices: Callable[..., Device]
) -> None:
    rnd = random.Random(seed)
    # odd seeds: a window of 3, so the gateway keeps stopping and resuming its reads (a broker
    # that overruns it, a kill or a restart may come while it is stopped)
    window = 3 if seed % 2 else 1000
    m = Mosquitto.make(tmp_path / "mosquitto")
    m.start()
    data, upstream, http = tmp_path / "data", tmp_path / "registry", free_port()
    upstream.mkdir()
    gw = start_gateway(data, upstream, m, http, window)
    cams = [devices(name, m.port) for name in DEVICES]
    sent: dict[tuple[str, int], float] = {}  # (device, mid) -> value
    try:
        # Messages before the gateway's first subscription have nobody to go to (MQTT 5 PUBACK
        # reason 0x10, "no matching subscribers"): start once a device's probe finds a subscriber.
        while True:  # polling a condition through the devices' surface, with until's deadline
            mid = cams[0].publish("devices/cam-1/metrics", metrics(-1.0))
            await until(lambda mid=mid: mid in cams[0].acked, 30, what="a probe's PUBACK")  # type: ignore[misc]
            if cams[0].acked[mid] == 0:
                break
            await asyncio.sleep(0.05)
        n = 0
        for step in range(12):
            for _ in range(rnd.randint(5, 40)):  # a burst at a random instant, some mid-restart
                cam = rnd.choice(cams)
                value = float(n)
                n += 1
                sent[(cam.id, cam.publish(f"devices/{cam.id}/metrics", metrics(value)))] = value
                if rnd.random() < 0.2:
                    await asyncio.sleep(rnd.random() * 0.05)
            action = rnd.random()
            if step in (3, 8) or action < 0.15:  # the site broker restarts (persistence on)
                m.stop()
                await asyncio.sleep(rnd.random() * 0.3)
                m.start()
            elif step == 5 or action < 0.3:  # the gateway is killed mid-stream and started again
                gw.send_signal(signal.SIGKILL)
                gw.wait()
                await asyncio.sleep(rnd.random() * 0.3)
                gw = start_gateway(data, upstream, m, http, window)
            await asyncio.sleep(rnd.random() * 0.2)

        def pubacks() -> dict[tuple[str, int], int]:
            by_id = {c.id: c for c in cams}
            return {k: by_id[k[0]].acked[k[1]] for k in sent if k[1] in by_id[k[0]].acked}

        await until(lambda: len(pubacks()) == len(sent), 60, what="every device message acknowledged")
        codes = pubacks()
        acked = {sent[k] for k, rc in codes.items() if rc == 0}
        await until(lambda: acked <= in_outbox(data), 60, what="every acknowledged message in the outbox")
        lost = acked - in_outbox(data)
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost"
        # and the restarted broker kept the gateway's subscription: every message found it
        assert sorted(set(codes.values())) == [0], f"PUBACK reason codes {sorted(codes.values())[-5:]}"
    finally:
        stop(gw)
        m.stop()


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"OTA_GATEWAY_MQTT__MODE": "external"}, "mqtt.external_url"),
        ({"OTA_GATEWAY_MQTT__MODE": "cluster"}, "mqtt.mode"),
        (
            {"OTA_GATEWAY_MQTT__MODE": "external", "OTA_GATEWAY_MQTT__EXTERNAL_URL": "http://x"},
            "mqtt.external_url",
        ),
        ({"OTA_GATEWAY_MQTT__EXTERNAL_SHARED_GROUP": "a/b"}, "mqtt.external_shared_group"),
        ({"OTA_GATEWAY_UPLINK__MQTT_WINDOW": "0"}, "uplink.mqtt_window"),
    ],
)
def test_a_bad_external_setting_stops_start_up_naming_the_key(env: dict[str, str], key: str) -> None:
    from gateway.core.errors import ConfigError
    from gateway.service.settings import load

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(None, environ=env)

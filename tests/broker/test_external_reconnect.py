"""``mqtt.mode = "external"`` across a restart of the site broker, with messages in flight to us: a
message taken on one connection is never acknowledged on the next (its packet id would name another
message there); the broker sends it again and that copy is the one acknowledged. Quietly: the
dropped ones are counted in ``stats()``, not logged as errors. And a login the restarted broker
refuses (a password changed there) is retried until it is accepted again, as at start-up."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import Callable

import pytest

from gateway.broker.external import ExternalBroker
from tests.broker.conftest import until
from tests.broker.test_external import (  # noqa: F401
    GATEWAY_PASSWORD,
    Device,
    Mosquitto,
    devices,
    metrics,
    mosquitto,
    settings,
)
from tests.peers import need

pytestmark = pytest.mark.peer


async def test_a_reconnect_acknowledges_nothing_of_the_earlier_connection(
    mosquitto: Mosquitto,  # noqa: F811
    devices: Callable[..., Device],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[int]] = []
    taken: list[float] = []

    def hook(_d: str, _t: str, payload: bytes) -> asyncio.Future[int]:
        taken.append(json.loads(payload)["avg_latency_ms"])
        pending.append(loop.create_future())
        return pending[-1]

    ext = ExternalBroker(settings(mosquitto), "ota-gateway-test", hook)
    caplog.set_level(logging.WARNING)
    await ext.start()
    cam = devices("cam-1", mosquitto.port)
    try:
        await until(ext.ready.is_set, what="subscribed")
        for i in range(3):
            cam.publish("devices/cam-1/metrics", metrics(float(i)))
        await until(lambda: len(pending) == 3, what="three messages taken")
        mosquitto.stop()  # persistence on: our session and its three in-flight messages are kept
        mosquitto.start()
        await until(lambda: ext.stats()["connects"] == 2, 30, what="connected again")
        for f in pending[:3]:
            f.set_result(1)  # durable now, but taken on the earlier connection: no PUBACK
        await until(lambda: len(pending) == 6, 30, what="the three sent again")
        assert ext.stats()["acked"] == 0 and ext.stats()["dropped_on_reconnect"] == 3
        assert taken == [0.0, 1.0, 2.0] * 2
        for f in pending[3:]:
            f.set_result(1)
        await until(lambda: ext.stats()["acked"] == 3, what="the copies acknowledged")
    finally:
        await ext.stop()
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


async def test_a_login_refused_after_a_restart_is_retried(mosquitto: Mosquitto) -> None:  # noqa: F811
    def password(pw: str) -> None:
        mosquitto.stop()
        passwd = str(mosquitto.work / "passwd")
        subprocess.run([need("mosquitto_passwd"), "-b", passwd, "ota-gateway", pw], check=True)
        mosquitto.start()

    ext = ExternalBroker(settings(mosquitto), "ota-gateway-test", lambda *_a: None)
    await ext.start()
    try:
        await until(lambda: ext.stats()["connects"] == 1, 30, what="connected")
        password("changed-at-the-broker")
        await until(lambda: ext.stats()["connect_refused"] >= 1, 30, what="a refused login")
        password(GATEWAY_PASSWORD)
        await until(lambda: ext.stats()["connects"] == 2, 30, what="connected again")
        await until(ext.ready.is_set, what="subscribed again")
    finally:
        await ext.stop()

"""Shared by the MQTT benchmarks: start a broker (ours, bare amqtt, mosquitto) in its own process,
and drive MQTT 3.1.1 load from another process with raw asyncio sockets.

    python tests/bench/mqttpeers.py serve ours|amqtt PORT     (used by the benchmarks)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def broker(kind: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A broker process on 127.0.0.1:port; yields the process (for its RSS)."""
    raise_nofile()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "mosquitto":
            conf = Path(tmp) / "m.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100\n")
            argv = ["/usr/sbin/mosquitto", "-c", str(conf)]
        else:
            argv = [PY, str(Path(__file__)), "serve", kind, str(port)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rss_bytes(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def connect_packet(client_id: str, user: str, password: str, keep_alive: int = 600) -> bytes:
    def s(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    body = s("MQTT") + bytes((4, 0xC2)) + keep_alive.to_bytes(2, "big") + s(client_id) + s(user) + s(password)
    return bytes((0x10, len(body))) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    raw = topic.encode()
    body = len(raw).to_bytes(2, "big") + raw + packet_id.to_bytes(2, "big") + payload
    length = bytearray()
    n = len(body)
    while True:
        b, n = n % 128, n // 128
        length.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes((0x32,)) + bytes(length) + body


async def open_client(port: int, device: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect_packet(device, device, "token"))
    connack = await asyncio.wait_for(reader.readexactly(4), 30)
    if connack[3] != 0:
        raise RuntimeError(f"CONNACK {connack[3]} for {device}")
    return reader, writer


# -- the broker processes -------------------------------------------------------------------------


async def serve(kind: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "ours":
        from gateway.broker import Broker
        from gateway.settings import MqttSettings

        counter = [0]

        def on_publish(device_id: str, topic: str, payload: bytes) -> None:
            counter[0] += 1  # the trivial hook

        b = Broker(
            MqttSettings(listen=f"127.0.0.1:{port}", max_connections=20_000),
            lambda d, p, c: p == "token",
            on_publish,
        )
        await b.start()
        await stop.wait()
        await b.stop()
    else:
        import logging

        from amqtt.broker import Broker as AmqttBroker

        logging.disable(logging.WARNING)  # amqtt logs each connection at INFO/WARNING
        a = AmqttBroker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}})
        await a.start()
        await stop.wait()
        await a.shutdown()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        raise_nofile()
        import warnings

        warnings.simplefilter("ignore")
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    else:
        print(__doc__)

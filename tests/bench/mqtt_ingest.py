"""Ingest benchmark: QoS 1 PUBLISH -> PUBACK messages per second through three brokers, same load.

    /work/venv/bin/python tests/bench/mqtt_ingest.py [--clients 8] [--messages 10000] [--window 32]

Each broker runs in its own process: ours (gateway.broker with a trivial on_publish hook, token
auth, topic rules), bare amqtt 0.12.1 with its default configuration, and mosquitto. The load
process opens ``--clients`` connections, each publishing ``--messages`` metrics-sized messages to
``devices/{id}/metrics`` with up to ``--window`` unacknowledged at a time, and counts PUBACKs.
Prints messages/s for each and the ratios. Never asserts; bounded by a 60 s cap per broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from mqttpeers import broker, free_port, open_client, publish_packet

PAYLOAD = json.dumps(
    {
        "device_id": "dev",
        "timestamp": 1760000000,
        "model_version": "1.4.2",
        "avg_latency_ms": 21.5,
        "num_inferences": 600,
        "num_errors": 1,
        "error_rate": 0.0017,
        "cpu_percent": 41.0,
        "ram_percent": 63.5,
        "uptime_seconds": 86400,
    }
).encode()


async def one_client(port: int, device: str, messages: int, window: int) -> int:
    reader, writer = await open_client(port, device)
    topic = f"devices/{device}/metrics"
    sent = acked = 0
    credit = asyncio.Semaphore(window)

    async def read_acks() -> None:
        nonlocal acked
        while acked < messages:
            header = await reader.readexactly(2)
            body = await reader.readexactly(header[1])
            if header[0] >> 4 == 4:
                acked += 1
                credit.release()
            del body

    acks = asyncio.create_task(read_acks())
    while sent < messages:
        await credit.acquire()
        sent += 1
        writer.write(publish_packet(topic, PAYLOAD, sent % 65535 + 1))
        await writer.drain()
    await asyncio.wait_for(acks, 60)
    writer.close()
    return acked


async def load(port: int, clients: int, messages: int, window: int) -> tuple[int, float]:
    start = time.perf_counter()
    done = await asyncio.wait_for(
        asyncio.gather(*(one_client(port, f"dev{i}", messages, window) for i in range(clients))), 60
    )
    return sum(done), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--window", type=int, default=32)
    args = ap.parse_args()
    rates: dict[str, float] = {}
    for kind in ("ours", "amqtt", "mosquitto"):
        port = free_port()
        with broker(kind, port):
            asyncio.run(load(port, 2, 200, args.window))  # warm-up
            try:
                acked, elapsed = asyncio.run(load(port, args.clients, args.messages, args.window))
            except TimeoutError:
                print(f"{kind:10s} did not finish within 60 s")
                continue
        rates[kind] = acked / elapsed
        print(f"{kind:10s} {acked:7d} QoS 1 messages in {elapsed:6.2f} s = {rates[kind]:9.0f} msg/s")
    if "ours" in rates:
        for peer in ("amqtt", "mosquitto"):
            if peer in rates:
                print(f"ours / {peer:10s} = {rates['ours'] / rates[peer]:.2f}")


if __name__ == "__main__":
    main()

"""``ota-gateway device`` and ``python -m gateway.agent``: run the reference agent on a device.

    ota-gateway device --service-url http://gateway:8080 --id cam-7 --public-key cloud.pem \\
        --state /var/lib/ota-device --attr fw=2.1.0 --attr hw=rev2 --model-id detector

It polls until stopped (SIGINT or SIGTERM: exit 0), or once with ``--once``; after every poll it
prints why it waits and when it asks again. A failure it cannot retry (and, with ``--once``, any
failure) is one line on stderr and exit 1, never exit 0. Every option may come
from the environment instead (``OTA_SERVICE_URL``, ``OTA_DEVICE_ID``, ``OTA_PUBLIC_KEY``,
``OTA_DEVICE_TOKEN``, ``OTA_DEVICE_STATE``). Without ``--simulate`` it reports no metrics: a real
device feeds its inference app's figures through :data:`gateway.agent.agent.MetricsSource`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.agent.agent import DeviceAgent
from gateway.agent.errors import AgentError, problem
from gateway.agent.poll import MAX_RETRY_S, Waiting
from gateway.agent.simulate import CLASSES, HEALTHY, SimulatedInference
from gateway.core.errors import GatewayError
from gateway.core.events import DeviceEvent


def _attr(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{pair!r}: expected KEY=VALUE, e.g. fw=2.1.0")
    return key, value


def _hostport(value: str) -> tuple[str, int] | None:
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise AgentError(f"--mqtt {value!r}: expected HOST:PORT, or '' for metrics over HTTP")
    return host.strip("[]") or "127.0.0.1", int(port)


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--service-url", default=env("OTA_SERVICE_URL"), help="the gateway ($OTA_SERVICE_URL)")
    p.add_argument("--id", dest="device_id", default=env("OTA_DEVICE_ID"), help="device id ($OTA_DEVICE_ID)")
    p.add_argument(
        "--public-key", default=env("OTA_PUBLIC_KEY"), help="the cloud's public key, PEM ($OTA_PUBLIC_KEY)"
    )
    p.add_argument(
        "--state",
        default=env("OTA_DEVICE_STATE", "device-state"),
        help="folder of the A/B slots (default ./device-state, $OTA_DEVICE_STATE)",
    )
    p.add_argument("--token", default=env("OTA_DEVICE_TOKEN"), help="device token ($OTA_DEVICE_TOKEN)")
    p.add_argument(
        "--attr", type=_attr, action="append", default=[], metavar="KEY=VALUE", help="fw=2.1.0, hw=rev2, ..."
    )
    p.add_argument("--model-id", help="the model to ask for before any is installed")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="long poll (default: off)")
    p.add_argument("--poll-interval", type=float, default=60.0, help="when the gateway gives no Retry-After")
    p.add_argument(
        "--max-poll-interval",
        type=float,
        default=MAX_RETRY_S,
        metavar="SECONDS",
        help=f"the longest Retry-After obeyed (default {MAX_RETRY_S:g})",
    )
    p.add_argument(
        "--mqtt",
        default=None,
        metavar="HOST:PORT",
        help="the gateway's broker for metrics and notices (default: the service host, port 1883; '' for HTTP)",
    )
    p.add_argument("--metrics-interval", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--simulate", action="store_true", help="report made-up healthy inference figures")
    p.add_argument(
        "--simulate-swap",
        type=_swap,
        default=None,
        metavar="A,B,SHARE",
        help="with --simulate, in the shadow stage the candidate swaps classes A and B on SHARE of the"
        " frames (0.05: 5 %%); its latency, CPU and class shares stay the active model's",
    )
    p.add_argument(
        "--drift-shift",
        type=float,
        default=0.0,
        metavar="SD",
        help="with --simulate: move the simulated inputs' drift features by SD standard deviations",
    )
    p.add_argument(
        "--drift-shift-at",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="the shift starts this long after start",
    )
    p.add_argument("--once", action="store_true", help="one poll and what it asks for, then exit")
    p.add_argument(
        "--require-statement",
        action="store_true",
        default=env("OTA_REQUIRE_STATEMENT") in ("1", "true", "yes"),
        help="refuse manifests without the registry's signed statement of model, version, length and"
        " sha256 ($OTA_REQUIRE_STATEMENT)",
    )


def _swap(value: str) -> tuple[str, str, float]:
    a, _, rest = value.partition(",")
    b, _, share = rest.partition(",")
    try:
        x = float(share)
    except ValueError:
        x = -1.0
    top = 2 * min(CLASSES.get(a, 0.0), CLASSES.get(b, 0.0))
    if a == b or not 0 <= x <= top:
        names = ", ".join(CLASSES)
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected A,B,SHARE with two of the simulated classes ({names}) and a SHARE "
            "from 0 to twice the rarer one's share"
        )
    return a, b, x


def agent_from(args: argparse.Namespace) -> DeviceAgent:
    missing = [
        flag
        for flag, value in (
            ("--service-url", args.service_url),
            ("--id", args.device_id),
            ("--public-key", args.public_key),
        )
        if not value
    ]
    if missing:
        raise AgentError(f"missing {', '.join(missing)} (or their environment variables); see --help")
    try:
        pem = Path(args.public_key).read_bytes()
    except OSError as exc:
        raise AgentError(f"--public-key {args.public_key}: {exc.strerror}") from exc
    url = args.service_url.rstrip("/")
    mqtt = _hostport(args.mqtt) if args.mqtt is not None else (urlsplit(url).hostname or "127.0.0.1", 1883)
    profile = dataclasses.replace(HEALTHY, swap=args.simulate_swap)
    source = SimulatedInference(
        {},
        interval_s=args.metrics_interval,
        rng=random.Random(),
        default=profile,
        drift_shift=args.drift_shift,
        drift_shift_at=args.drift_shift_at,
    )
    return DeviceAgent(
        url,
        args.device_id,
        pem,
        Path(args.state),
        attrs=dict(args.attr),
        token=args.token,
        model_id=args.model_id,
        wait_s=args.wait,
        poll_interval_s=args.poll_interval,
        max_poll_interval_s=args.max_poll_interval,
        metrics_interval_s=args.metrics_interval,
        metrics_source=source if args.simulate else None,
        shadow_source=source.shadow if args.simulate else None,
        mqtt=mqtt,
        listeners=[_print_event],
        on_wait=[_print_wait],
        require_statement=args.require_statement,
    )


def _print_event(e: DeviceEvent) -> None:
    print(
        f"{e.device_id}: {e.event} {e.model_id} {e.version}" + (f" ({e.reason})" if e.reason else ""),
        flush=True,
    )


def _print_wait(waiting: Waiting) -> None:
    if not waiting.failed:  # a failure is a warning on stderr (the agent's log)
        print(waiting.text(), flush=True)


async def _run(agent: DeviceAgent, once: bool) -> None:
    if once:
        async with aiohttp.ClientSession() as s:
            agent.tell(await agent.cycle(s))
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.run(stop)


def run(args: argparse.Namespace) -> int:
    agent = agent_from(args)
    current = agent.state_dir
    print(f"device {agent.device_id}: polling {agent.service_url} (slots in {current})", flush=True)
    try:
        asyncio.run(_run(agent, args.once))
    except aiohttp.ClientError as exc:
        raise AgentError(f"cannot reach the gateway at {agent.service_url}: {exc}") from exc
    except OSError as exc:
        raise AgentError(problem(exc)) from exc
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.agent", description="The reference OTA device agent (A/B slots)."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except GatewayError as exc:
        print(f"ota-device: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def register_with(sub: Any) -> None:
    """The ``device`` sub-command of ``ota-gateway``."""
    p = sub.add_parser("device", help="run the reference device agent (poll, download, verify, A/B switch)")
    add_arguments(p)
    p.set_defaults(func=run)

"""The other side of the LAN, run inside a network namespace: ``python -m tests.discovery.peer ...``.

Speaks JSON lines: events on stdout, commands on stdin. The device side uses plain python-zeroconf,
as a device maker would; ``gateway`` runs our own advertiser (a second gateway on the LAN).

    device --ip A --name N (--txt k=v ... | --raw-txt HEX)   advertise one _ota-device._tcp
        stdin {"op": "update", "txt": {...}} -> "updated";  {"op": "goodbye"} -> "gone", exit
    devices --ip A --count N [--prefix P]                    advertise N devices (benchmark)
    browse --ip A --type T                                   print "found"/"removed" per instance
    gateway --ip A --instance I --site S --port P            advertise a gateway with our Advertiser
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

DEVICE_TYPE = "_ota-device._tcp.local."


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def commands() -> Any:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        yield json.loads(line)


def device_info(name: str, ip: str, txt: dict[str, str] | bytes, port: int = 9000) -> AsyncServiceInfo:
    host = name.lower().replace(" ", "-")
    return AsyncServiceInfo(
        DEVICE_TYPE,
        f"{name}.{DEVICE_TYPE}",
        port=port,
        properties=txt,
        server=f"{host}.local.",
        parsed_addresses=[ip],
    )


def parse_txt_args(pairs: list[str]) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs)


async def run_device(args: argparse.Namespace) -> None:
    async with AsyncZeroconf(interfaces=[args.ip]) as aiozc:
        txt: dict[str, str] | bytes = (
            bytes.fromhex(args.raw_txt) if args.raw_txt else parse_txt_args(args.txt)
        )
        info = device_info(args.name, args.ip, txt)
        await (await aiozc.async_register_service(info))
        emit("ready", name=info.name)
        async for cmd in commands():
            if cmd["op"] == "update":
                info = device_info(args.name, args.ip, cmd["txt"])
                await (await aiozc.async_update_service(info))
                emit("updated")
            elif cmd["op"] == "goodbye":
                await (await aiozc.async_unregister_service(info))
                emit("gone")
                return


async def run_devices(args: argparse.Namespace) -> None:
    async with AsyncZeroconf(interfaces=[args.ip]) as aiozc:
        infos = [
            device_info(
                f"{args.prefix}-{i:05d}",
                args.ip,
                {"id": f"{args.prefix}-{i:05d}", "hw": f"rev{i % 3}", "fw": "2.1.0", "line": f"l{i % 7}"},
            )
            for i in range(args.count)
        ]
        emit("starting", count=len(infos))
        # Names are unique by construction: skip probing (cooperating responders) to keep start-up
        # short; the announcements still go out as for any registration.
        pending = [await aiozc.async_register_service(info, cooperating_responders=True) for info in infos]
        await asyncio.gather(*pending)
        emit("ready", count=len(infos))
        async for cmd in commands():
            if cmd["op"] == "goodbye":
                break
        await aiozc.async_unregister_all_services()
        emit("gone")


async def run_browse(args: argparse.Namespace) -> None:
    async with AsyncZeroconf(interfaces=[args.ip]) as aiozc:
        tasks: set[asyncio.Task[None]] = set()

        async def resolve(service_type: str, name: str, change: str) -> None:
            info = AsyncServiceInfo(service_type, name)
            if await info.async_request(aiozc.zeroconf, 3000):
                emit(
                    "found",
                    change=change,
                    name=info.name,
                    port=info.port,
                    server=info.server,
                    addresses=info.parsed_addresses(),
                    txt={
                        k.decode(): (v.decode() if v is not None else None)
                        for k, v in info.properties.items()
                    },
                )

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            if state_change is ServiceStateChange.Removed:
                emit("removed", name=name)
                return
            task = asyncio.ensure_future(resolve(service_type, name, state_change.name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        browser = AsyncServiceBrowser(aiozc.zeroconf, args.type, handlers=[on_change])
        emit("browsing")
        async for _cmd in commands():
            pass
        await browser.async_cancel()


async def run_gateway(args: argparse.Namespace) -> None:
    from gateway.core.settings import DiscoverySettings
    from gateway.discovery.advertise import Advertiser

    adv = Advertiser(
        DiscoverySettings(interfaces=(args.ip,)),
        site=args.site,
        http_port=args.port,
        tls=False,
        mqtt_port=1883,
        cert_sha256=None,
        instance=args.instance,
    )
    await adv.start()
    emit("ready", name=adv.name, mqtt_name=adv.mqtt_name)
    async for cmd in commands():
        if cmd["op"] == "stop":
            break
    await adv.stop()
    emit("gone")


def main() -> None:
    p = argparse.ArgumentParser(prog="peer")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("device")
    d.add_argument("--ip", required=True)
    d.add_argument("--name", required=True)
    d.add_argument("--txt", nargs="*", default=[])
    d.add_argument("--raw-txt", default="")
    ds = sub.add_parser("devices")
    ds.add_argument("--ip", required=True)
    ds.add_argument("--count", type=int, required=True)
    ds.add_argument("--prefix", default="bench")
    b = sub.add_parser("browse")
    b.add_argument("--ip", required=True)
    b.add_argument("--type", required=True, nargs="+")
    g = sub.add_parser("gateway")
    g.add_argument("--ip", required=True)
    g.add_argument("--instance", required=True)
    g.add_argument("--site", default="peer-site")
    g.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    run = {"device": run_device, "devices": run_devices, "browse": run_browse, "gateway": run_gateway}[
        args.cmd
    ]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

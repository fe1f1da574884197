"""Run a real gateway in the test's event loop, on ephemeral ports, and wait on its state."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.core import settings as S
from gateway.service.wiring import Gateway
from tests.conftest import Registry

# The cloud's rules alone for a model's first version: for tests of the device API, not of the gates.
OPEN_FIRST = {"first_version": "open"}


def gateway_settings(reg: Registry, data: Path, upstream: str | None = None, **sections: Any) -> S.Settings:
    """Loopback, ephemeral ports, fast polling; ``sections`` replace fields per section."""
    base = S.Settings(
        site=reg.site or "test-site",
        data_dir=str(data),
        http=S.HttpSettings(listen="127.0.0.1:0"),
        operator=S.OperatorSettings(listen="127.0.0.1:0"),
        mqtt=S.MqttSettings(listen="127.0.0.1:0"),
        trust=S.TrustSettings(trusted_keys=(str(reg.public_key),)),
        mirror=S.MirrorSettings(
            upstream=str(reg.root) if upstream is None else upstream,
            poll_interval_s=0.2,
            retry_initial_s=0.05,
            retry_max_s=0.2,
        ),
        discovery=S.DiscoverySettings(enabled=False),
    )
    changes: dict[str, Any] = {}
    for name, fields in sections.items():
        current = getattr(base, name)
        changes[name] = dataclasses.replace(current, **fields) if isinstance(fields, dict) else fields
    return dataclasses.replace(base, **changes)


@asynccontextmanager
async def running(settings: S.Settings) -> AsyncIterator[Gateway]:
    gw = Gateway.from_settings(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def base_url(gw: Gateway) -> str:
    host, port = gw.http_addresses[0][:2]
    return f"http://{host}:{port}"


async def until(cond: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it is truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition with a deadline

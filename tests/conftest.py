"""Fixtures shared across the suite: keys and a registry folder made by the real registry tool, and
``hostile``, an upstream serving that folder that misbehaves on request (:mod:`tests.mirror.hostile`)."""

from __future__ import annotations

import compileall
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import registry
from tests.mirror.hostile import Hostile

SLOW_TESTS = os.environ.get("SLOW_TESTS") == "1"
# Guarantees tried over many random seeds, each run by a .ci/run step of its own with more of them
# (the README lists the variables); the README's test command skips them with the tests marked slow.
SEEDED = (
    "tests/fuzz/",
    "tests/rollout/test_no_leak.py",
    "tests/rollout/test_gate_invariant_process.py",
    "tests/rollout/test_false_halt_rate.py",
    "tests/system/test_crash_points.py",
    "tests/bundle/test_pulled_stick.py",
    "tests/bundle/test_uplink_export.py",
    "tests/broker/test_external.py",
    "tests/mirror/test_streaming_guarantee.py",
    "tests/devices/test_tier_relay.py",
    "tests/system/test_chaos.py",
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the gateway's modules once before the tests start their gateways, demos and CLI
    commands (hundreds of processes): where ``PYTHONDONTWRITEBYTECODE`` is set, as on the machines
    this suite runs on, each of them compiled every module again (half a second each: the README's
    command took 10 min 4 s without this, 9 min 35 s with it). ``compileall`` writes the bytecode
    regardless of that setting."""
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "gateway", quiet=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` and the files of :data:`SEEDED` run only with ``SLOW_TESTS=1``
    (``.ci/run`` runs them as steps of their own), so the README's test command stays within its
    ten minutes on two cores."""
    if SLOW_TESTS:
        return
    root = Path(__file__).resolve().parent.parent
    skip = pytest.mark.skip(reason="a long run: SLOW_TESTS=1 runs it (a step of .ci/run)")
    for item in items:
        where = item.path.resolve().relative_to(root).as_posix()
        if item.get_closest_marker("slow") is not None or where.startswith(SEEDED):
            item.add_marker(skip)


@dataclass
class Registry:
    """A registry folder and the cloud's key, driven through the real ``gateway.registry`` code."""

    root: Path
    key_dir: Path
    site: str | None = "test-site"

    @property
    def private_key(self) -> Path:
        return self.key_dir / "private.pem"

    @property
    def public_key(self) -> Path:
        return self.key_dir / "public.pem"

    def publish(
        self, model: bytes | Path, *, model_id: str = "detector", version: str = "1.0.0", **kw: Any
    ) -> dict[str, Any]:
        if isinstance(model, bytes):
            path = self.key_dir.parent / f"{model_id}-{version}.bin"
            path.write_bytes(model)
        else:
            path = model
        kw.setdefault("site", self.site)
        return registry.publish(self.root, path, self.private_key, model_id=model_id, version=version, **kw)

    def index_bytes(self) -> bytes:
        return registry.index_path(self.root, self.site).read_bytes()


@pytest.fixture
def make_registry(tmp_path: Path) -> Callable[..., Registry]:
    def make(
        name: str = "registry", algorithm: str = "ecdsa-p256", site: str | None = "test-site"
    ) -> Registry:
        key_dir = tmp_path / f"{name}-keys"
        registry.keygen(key_dir, algorithm)
        root = tmp_path / name
        root.mkdir()
        return Registry(root, key_dir, site)

    return make


@pytest.fixture
def reg(make_registry: Callable[..., Registry]) -> Registry:
    return make_registry()


@pytest.fixture
async def hostile(reg: Registry) -> AsyncIterator[Hostile]:
    h = Hostile(reg.root)
    await h.start()
    yield h
    await h.stop()


def is_root() -> bool:
    return os.geteuid() == 0

"""A private two-namespace LAN per test (root only), torn down even when the test fails."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from tests.conftest import is_root
from tests.discovery.netns import Lan, make_lan, remove_lan


@pytest.fixture
async def lan() -> AsyncIterator[Lan]:
    if not is_root():
        pytest.skip("needs root: creates network namespaces and a veth pair for real multicast")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip) to create network namespaces")
    made = None
    try:
        made = make_lan()
        yield made
    finally:
        if made is not None:
            await made.stop_all()
            remove_lan(made)

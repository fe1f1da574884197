"""The samples story through the real gateway: a UTC day (its clock running it in 40 s) of 200
devices offering 10x the budget over real HTTP, nginx as the upload server. The same figures as
the pure core's day (:mod:`tests.core.samples.test_budget`), read from the upload server's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.samples.site_day import site_day

pytestmark = pytest.mark.slow  # a long system story: SLOW_TESTS=1 runs it (a .ci/run step)


async def test_a_day_of_200_devices_through_the_real_gateway(tmp_path: Path) -> None:
    d = await site_day(tmp_path, seconds=40, seed=77, budget=512 << 10)
    assert set(d.answers) == {200}
    assert d.files == d.sent  # every blob has its index record
    assert 0.99 * d.budget <= d.sent_bytes <= d.budget  # within 1 % of the budget, never over
    assert d.sent_top_share >= 5 * d.offered_top_share
    assert d.largest_device_share <= 0.05 + 8192 / d.budget

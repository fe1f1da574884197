"""The anytime-valid tests of :mod:`gateway.core.gates.sequential` at the edges a real site reaches."""

from __future__ import annotations

import pytest

from gateway.core.gates.sequential import Answer, judge_share, share_e_values


@pytest.mark.parametrize("n", [1, 2, 20, 159, 1000, 10_000])
def test_a_share_of_many_devices_is_judged_without_overflow(n: int) -> None:
    """A wave of 159 devices that all installed once overflowed ``math.exp`` in the share's
    bounds (the evidence of 0 of 159 against a margin of 0.99): a wave of a large site crashed
    the tick. Every size gives a finite answer, and the right one at the ends."""
    alpha = 0.05 / 15
    none_bad = judge_share(0, n, 0.2, alpha=alpha, no_worse_alpha=0.2)
    all_bad = judge_share(n, n, 0.2, alpha=alpha, no_worse_alpha=0.2)
    assert 0.0 <= none_bad.lower <= none_bad.upper <= 1.0
    assert 0.0 <= all_bad.lower <= all_bad.upper <= 1.0
    if n >= 20:
        assert none_bad.answer == Answer.NO_WORSE
        assert all_bad.answer == Answer.WORSE and all_bad.lower > 0.2
        assert all_bad.e_value >= 1 / alpha
    if n >= 159:
        assert none_bad.upper < 0.2
    for margin in (0.01, 0.5, 0.99):
        worse, better = share_e_values(n // 3, n, margin)
        assert worse >= 0.0 and better >= 0.0

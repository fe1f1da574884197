"""The anytime-valid tests, each checked by its own simulation: looked at after every observation,
a null stream says "worse" at most at the stated rate (plus its binomial allowance), and a stream past
the margin is found."""

from __future__ import annotations

import math
import random

import pytest

from gateway.core.gates.sequential import Answer, e_value_mean, judge_mean, judge_share, share_e_values, width

RUNS = 300


def _allowance(rate: float, runs: int) -> float:
    return rate + 2 * math.sqrt(rate * (1 - rate) / runs)


def _stream_ever_worse(
    rng: random.Random, mean: float, margin: float, alpha: float, looks: int, skew: bool
) -> bool:
    """A stream of windows (each an overdispersed count's rate), judged after every window from the
    running sums exactly as a gate's stream is: the ratio of sums and its sandwich variance."""
    n = d = nn = nd = dd = 0.0
    for w in range(1, looks + 1):
        den = rng.uniform(50, 400)  # traffic varies window to window
        rate = mean * (rng.gammavariate(2.0, 0.5) if skew else 1.0)  # overdispersed: extra-Poisson noise
        num = rng.gauss(rate * den, math.sqrt(max(rate * den, 1e-9)))
        n, d, nn, nd, dd = n + num, d + den, nn + num * num, nd + num * den, dd + den * den
        if w < 10:
            continue
        theta = n / d
        var = max(0.0, nn - 2 * theta * nd + theta * theta * dd) / (d * d) * w / (w - 1)
        j = judge_mean(theta, var, margin, tau=margin, alpha=alpha, no_worse_alpha=0.2)
        if j.answer == Answer.WORSE:
            return True
    return False


@pytest.mark.parametrize("skew", [False, True])
# At the margin (the binding case: the most often called worse), and inside it (a slow-step run).
@pytest.mark.parametrize("mean", [0.02, pytest.param(0.015, marks=pytest.mark.slow)])
def test_a_mean_at_or_inside_its_margin_is_called_worse_at_most_at_the_stated_rate(
    mean: float, skew: bool
) -> None:
    rng = random.Random(20261206 + int(mean * 1000) + skew)
    alpha = 0.05
    worse = sum(_stream_ever_worse(rng, mean, 0.02, alpha, 200, skew) for _ in range(RUNS))
    assert worse / RUNS <= _allowance(alpha, RUNS), f"{worse} of {RUNS} null streams called worse"


def test_a_mean_past_its_margin_is_found_and_its_evidence_grows() -> None:
    rng = random.Random(7)
    found = sum(_stream_ever_worse(rng, 0.04, 0.02, 0.05, 300, True) for _ in range(100))
    assert found >= 95
    assert e_value_mean(0.01, 1e-6, 0.02) > e_value_mean(0.01, 1e-5, 0.02) > 1.0
    assert e_value_mean(-0.01, 1e-6, 0.02) < 1.0  # on the good side: no evidence of worse


def test_the_three_answers_and_the_bounds() -> None:
    margin = 0.01
    worse = judge_mean(0.03, 1e-6, margin, tau=margin, alpha=0.05, no_worse_alpha=0.2)
    assert worse.answer == Answer.WORSE and worse.lower > margin and worse.e_value >= 20
    fine = judge_mean(0.0, 1e-6, margin, tau=margin, alpha=0.05, no_worse_alpha=0.2)
    assert fine.answer == Answer.NO_WORSE and fine.upper < margin * 2
    unsure = judge_mean(0.009, 1e-5, margin, tau=margin, alpha=0.05, no_worse_alpha=0.2)
    assert unsure.answer == Answer.UNDECIDED
    lower_worse = judge_mean(0.5, 1e-6, 0.8, tau=0.2, alpha=0.05, no_worse_alpha=0.2, higher_is_worse=False)
    assert lower_worse.answer == Answer.WORSE and lower_worse.upper < 0.8
    # wider at a smaller rate, narrower with less variance
    assert width(1e-5, 0.01, 0.001) > width(1e-5, 0.01, 0.05) > width(1e-6, 0.01, 0.05)
    # an infinite variance (no data) is undecided, never a pass
    assert (
        judge_mean(0.0, math.inf, margin, tau=margin, alpha=0.05, no_worse_alpha=0.2).answer
        == Answer.UNDECIDED
    )


@pytest.mark.parametrize("p", [0.2, 0.1])  # at the limit, and under it
@pytest.mark.slow
def test_a_share_at_or_under_its_limit_is_called_worse_at_most_at_the_stated_rate(p: float) -> None:
    rng = random.Random(99 + int(p * 100))
    alpha = 0.05
    worse = 0
    for _ in range(RUNS):
        bad = 0
        for n in range(1, 101):  # a device at a time joins the waves; looked at after each
            bad += rng.random() < p
            if judge_share(bad, n, 0.2, alpha=alpha, no_worse_alpha=0.2).answer == Answer.WORSE:
                worse += 1
                break
    assert worse / RUNS <= _allowance(alpha, RUNS)


def test_a_share_past_its_limit_is_found_and_two_of_two_say_something() -> None:
    assert judge_share(10, 10, 0.2, alpha=0.05, no_worse_alpha=0.2).answer == Answer.WORSE
    up, down = share_e_values(2, 2, 0.2)
    assert up > 1.0 > down  # two of two failed: evidence of worse, none of better
    assert judge_share(0, 30, 0.2, alpha=0.05, no_worse_alpha=0.2).answer == Answer.NO_WORSE


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

"""Anytime-valid tests: the three answers of a criterion, at any number of looks, at a stated rate.

Two shapes of evidence, each with its textbook formula (no library of the field fits the core's
stdlib-only rule; ``tests/core/gates/test_sequential.py`` checks each by its own simulation):

* a mean with an estimated variance (:func:`judge_mean`): the one-sided (half-normal) mixture of
  Gaussian likelihood ratios against the margin, the mixture SPRT of Lindon, Sanden and Shirikian
  (KDD 2022) and the normal-mixture boundary of Robbins (Howard, Ramdas, McAuliffe, Sekhon,
  "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021). For every
  value on the good side of the margin it is a test supermartingale, so by Ville's inequality it
  reaches ``1 / alpha`` at any look with probability at most ``alpha`` (asymptotically, with the
  variance estimated; the simulations check it), and the coordinator may multiply the e-values of
  independent sites. :func:`width` is the two-sided normal-mixture boundary, ``sqrt(V (V + tau^2) /
  tau^2 * (log((V + tau^2) / V) + 2 log(1 / alpha)))``, a first guess for :func:`boundary`.
* a share of devices (:func:`judge_share`: install failures, silence): the likelihood ratio of a
  Bernoulli stream, mixed over a grid of alternatives past the margin (each a test martingale at
  the margin, a supermartingale on the good side), so one or two devices already say something.

"Worse" needs the evidence past the margin at the stated rate; "no worse" needs it on the good side
at ``no_worse_alpha``; anything else is "undecided": never a pass for lack of data.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)  # where between the margin and the end the share alternatives sit


class Answer(enum.StrEnum):
    WORSE = "worse"  # past the margin: halt
    NO_WORSE = "no_worse"  # on the good side of the margin: may advance
    UNDECIDED = "undecided"  # keep collecting; after the longest soak, a person decides
    FAIL = "worse"  # the names of the fixed-threshold gate, kept for its callers
    PASS = "no_worse"
    INSUFFICIENT = "undecided"

    @classmethod
    def _missing_(cls, value: object) -> Answer | None:
        """Verdicts stored by the fixed-threshold gate read back as the three answers."""
        return {"pass": cls.NO_WORSE, "fail": cls.WORSE, "insufficient": cls.UNDECIDED}.get(str(value))


@dataclass(frozen=True, slots=True)
class Judgement:
    answer: Answer
    estimate: float
    lower: float  # the confidence sequence at the stated rate, on the estimate's scale
    upper: float
    e_value: float  # evidence that it is worse than the margin (1: none; >= 1/alpha: worse)


def width(variance: float, tau: float, alpha: float) -> float:
    """Half-width of the normal-mixture confidence sequence at level 1 - alpha."""
    v = max(variance, 1e-300)
    t2 = tau * tau
    return math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) + 2.0 * math.log(1.0 / alpha)))


def _log_phi(x: float) -> float:
    """log of the standard normal distribution function, also far in its lower tail."""
    if x > -30.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    return -x * x / 2.0 - math.log(-x) - 0.5 * math.log(2.0 * math.pi)


def e_value_mean(z: float, variance: float, tau: float) -> float:
    """Half-normal mixture e-value that the mean exceeds the margin by ``z`` (estimate - margin, on
    the worse side), for an estimate of ``variance``."""
    v = max(variance, 1e-300)
    t2 = tau * tau
    s = v * (v + t2)
    exponent = z * z * t2 / (2.0 * s) if z > 0 else 0.0
    log_e = (
        math.log(2.0) + 0.5 * math.log(v / (v + t2)) + min(exponent, 700.0) + _log_phi(z * tau / math.sqrt(s))
    )
    return math.exp(min(log_e, 700.0))


def boundary(variance: float, tau: float, alpha: float) -> float:
    """How far past a margin an estimate must be for the one-sided e-value to reach ``1 / alpha``
    (the e-value grows with that distance; found by bisection). An infinite variance: never."""
    if not math.isfinite(variance):
        return math.inf
    lo, hi = 0.0, max(width(variance, tau, alpha), 1e-12)
    while e_value_mean(hi, variance, tau) < 1.0 / alpha:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if e_value_mean(mid, variance, tau) < 1.0 / alpha else (lo, mid)
    return hi


def judge_mean(
    estimate: float,
    variance: float,
    margin: float,
    *,
    tau: float,
    alpha: float,
    no_worse_alpha: float,
    higher_is_worse: bool = True,
) -> Judgement:
    """Is the mean worse than ``margin`` (above it, or below it when ``higher_is_worse`` is False)?

    Worse when the one-sided e-value against the margin reaches ``1 / alpha`` (Ville's inequality:
    a candidate on the good side of the margin gets there at most at ``alpha``, at any look); no
    worse when the e-value the other way reaches ``1 / no_worse_alpha``. The bounds are where those
    tests would flip: the margins this evidence rules out."""
    past = boundary(variance, tau, alpha)
    ok = boundary(variance, tau, no_worse_alpha)
    lo, hi = estimate - past, estimate + past
    z = estimate - margin if higher_is_worse else margin - estimate
    e = e_value_mean(z, variance, tau) if math.isfinite(variance) else 0.0
    if z >= past:
        answer = Answer.WORSE
    elif -z >= ok:
        answer = Answer.NO_WORSE
    else:
        answer = Answer.UNDECIDED
    return Judgement(answer, estimate, lo, hi, e)


def share_e_values(bad: int, n: int, margin: float) -> tuple[float, float]:
    """(evidence the share exceeds ``margin``, evidence it is below it) after ``bad`` of ``n``."""
    m = min(max(margin, 1e-6), 1 - 1e-6)

    def mix(grid: tuple[float, ...]) -> float:
        # in logs (a wave of a few hundred devices is past exp's range), capped as e_value_mean is
        logs = [bad * math.log(p / m) + (n - bad) * math.log((1 - p) / (1 - m)) for p in grid]
        top = max(logs)
        log_mean = top + math.log(sum(math.exp(x - top) for x in logs) / len(grid))
        return math.exp(min(log_mean, 700.0))

    worse = mix(tuple(m + g * (1 - m) for g in _GRID))
    better = mix(tuple(g * m for g in _GRID))
    return worse, better


def judge_share(bad: int, n: int, margin: float, *, alpha: float, no_worse_alpha: float) -> Judgement:
    """Is the share of bad devices above ``margin``? Bounds are the shares the evidence rules out."""
    worse, better = share_e_values(bad, n, margin)
    estimate = bad / n if n else 0.0
    lo, hi = _share_bounds(bad, n, alpha)
    if worse >= 1 / alpha:
        answer = Answer.WORSE
    elif better >= 1 / no_worse_alpha:
        answer = Answer.NO_WORSE
    else:
        answer = Answer.UNDECIDED
    return Judgement(answer, estimate, lo, hi, worse)


def _share_bounds(bad: int, n: int, alpha: float) -> tuple[float, float]:
    """The shares p the evidence has not ruled out (each tested as a margin), to a hundredth."""
    if n == 0:
        return 0.0, 1.0
    kept = [p / 100 for p in range(1, 100) if max(share_e_values(bad, n, p / 100)) < 1 / alpha]
    return (kept[0], kept[-1]) if kept else (bad / n, bad / n)

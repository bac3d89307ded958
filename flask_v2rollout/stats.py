"""Pure statistics for the gates (stdlib only, no Flask).

The gates and rollback matrices are evaluated every few seconds, so every
comparison between v2 and v1 they act on is an **anytime-valid** interval: a
confidence sequence, whose coverage holds at every look at once, not at one
fixed sample size. Reading the dashboard every minute, or evaluating every
30 seconds, does not inflate false alarms.

Method: the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha,
Kennedy & Ramdas ("Time-uniform central limit theory and asymptotic confidence
sequences", 2023), the one GrowthBook uses. For an estimate with variance ``V``
from ``n`` observations (``sigma^2 = n V`` per observation) the two-sided
``1 - alpha`` half-width is::

    sigma * sqrt( 2 (n rho^2 + 1) / (n^2 rho^2) * log( sqrt(n rho^2 + 1) / alpha ) )

``rho`` is the tuning parameter: the sequence is tightest near
``n* = tuning`` observations, with ``rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / n*``
(the authors' approximation). ``V2ROLLOUT_SEQUENTIAL_TUNING`` sets ``n*``
(users or calculations in both arms together); ``V2ROLLOUT_GATE_ALPHA`` sets
alpha. Assumptions: observations independent within an arm (one per user for
conversion, one per calculation for error and fallback rates and latency), a
variance estimated from the data (the "asymptotic" part: valid as ``n`` grows,
which the gates' sample minimums stand for), arms independent.

* :func:`ratio_sequence` — v2's rate as a multiple of v1's (log ratio, delta method).
* :func:`difference_sequence` — v2's rate minus v1's.
* :func:`mean_shift_sequence` — the shift of mean log latency, from the latency
  histograms, as a ratio of geometric means.
* :func:`srm_test` — sample-ratio mismatch: users per arm against the configured
  percentage, an anytime-valid p-value from the same boundary (the sequential form
  of the one-degree-of-freedom chi-square test).

The fixed-horizon tests stay for comparison and the informational latency rank test:
:func:`proportion_ratio_test` (Katz log-ratio bounds) and :func:`mann_whitney_u` /
:func:`mann_whitney_binned` (rank test on skewed latencies, directly on the
histograms ``{bin_index: count}`` of :mod:`flask_v2rollout.metrics.recorder`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


#: defaults of the tuning parameter (observations where the sequence is tightest) and alpha
DEFAULT_TUNING = 10_000.0
DEFAULT_ALPHA = 0.05


def upper_tail(z: float) -> float:
    """P(Z > z) for a standard normal Z, accurate far in the tail where ``1 - cdf`` rounds to 0."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class RatioTest:
    """Non-inferiority of arm b (v2) against arm a (v1): H0 ``p_b / p_a < margin``.

    ``lower``/``upper`` are one-sided ``1 - alpha`` confidence bounds of the ratio
    (Katz: Wald interval on the log ratio). ``passes`` iff ``lower >= margin``,
    which is the same as ``p_value <= alpha``. ``insufficient`` results (an arm
    without users or without conversions, or no variance at all) never pass; their
    ``ratio`` is still reported when it can be computed (e.g. 0.0 when v2 has no
    conversion but v1 has some).
    """

    p_a: float | None
    p_b: float | None
    ratio: float | None
    lower: float | None
    upper: float | None
    z: float | None
    p_value: float | None
    margin: float
    alpha: float
    passes: bool
    insufficient: bool
    reason: str = ""


def proportion_ratio_test(
    conv_b: float, n_b: float, conv_a: float, n_a: float, *, ratio: float = 0.95, alpha: float = 0.05
) -> RatioTest:
    """One-sided test that ``p_b / p_a >= ratio`` (v2 = b converts at least ``ratio`` times as well as v1 = a).

    ``conv_*`` are the numbers of converting users, ``n_*`` the users exposed:
    each user is one Bernoulli trial. Method: log ratio with standard error
    ``sqrt((1 - p_b) / conv_b + (1 - p_a) / conv_a)`` (Katz et al. 1978), chosen
    over Fieller because it is closed-form and well behaved for the sample sizes a
    gate waits for; it needs at least one conversion in each arm, below that the
    result is ``insufficient``.
    """
    for conv, n, arm in ((conv_b, n_b, "b"), (conv_a, n_a, "a")):
        if n < 0 or conv < 0 or conv > n:
            raise ValueError(f"arm {arm}: need 0 <= conversions <= users, got {conv} of {n}")
    if ratio <= 0 or not 0 < alpha < 1:
        raise ValueError("need ratio > 0 and 0 < alpha < 1")
    p_b = conv_b / n_b if n_b else None
    p_a = conv_a / n_a if n_a else None
    observed = p_b / p_a if p_b is not None and p_a else None

    def insufficient(reason: str) -> RatioTest:
        return RatioTest(p_a, p_b, observed, None, None, None, None, ratio, alpha, False, True, reason)

    if p_a is None or p_b is None:
        return insufficient("an arm has no users")
    if not conv_a or not conv_b or observed is None:
        return insufficient("an arm has no conversions")
    se = math.sqrt((1.0 - p_b) / conv_b + (1.0 - p_a) / conv_a)
    if se == 0.0:
        return insufficient("every user converted in both arms: no variance to test")
    log_ratio = math.log(observed)
    spread = _NORMAL.inv_cdf(1.0 - alpha) * se
    lower, upper = math.exp(log_ratio - spread), math.exp(log_ratio + spread)
    z = (log_ratio - math.log(ratio)) / se
    return RatioTest(p_a, p_b, observed, lower, upper, z, upper_tail(z), ratio, alpha, lower >= ratio, False)


@dataclass(frozen=True)
class RankTest:
    """Mann–Whitney U of x against y (normal approximation, tie-corrected, continuity-corrected).

    ``u`` counts the pairs (x, y) with x > y, ties counting one half, so
    ``effect = u / (n_x * n_y)`` estimates P(X > Y) + P(X = Y) / 2 (0.5: no shift).
    ``z`` and ``p_greater`` are for the one-sided alternative "x stochastically
    greater than y"; ``p_two_sided`` for "x and y differ". When every value is tied
    there is no evidence of a difference: z = 0, p_greater = 0.5, p_two_sided = 1.
    """

    n_x: float
    n_y: float
    u: float
    effect: float
    z: float
    p_greater: float
    p_two_sided: float


def _rank_test(groups: Iterable[tuple[float, float]]) -> RankTest:
    """Core on tie groups in ascending order of value: (count in x, count in y) per distinct value."""
    n_x = n_y = seen = rank_sum_x = tie_term = 0.0
    for count_x, count_y in groups:
        if count_x < 0 or count_y < 0:
            raise ValueError("counts must be non-negative")
        tied = count_x + count_y
        rank_sum_x += count_x * (seen + (tied + 1.0) / 2.0)  # mid-rank of the group
        tie_term += tied**3 - tied
        seen += tied
        n_x += count_x
        n_y += count_y
    if n_x <= 0 or n_y <= 0:
        raise ValueError("both samples need at least one value")
    pairs = n_x * n_y
    u = rank_sum_x - n_x * (n_x + 1.0) / 2.0
    total = n_x + n_y
    variance = pairs / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)))
    if variance <= 0.0:
        return RankTest(n_x, n_y, u, u / pairs, 0.0, 0.5, 1.0)
    sd = math.sqrt(variance)
    mean = pairs / 2.0
    z = (u - mean - 0.5) / sd
    z_two = (max(u, pairs - u) - mean - 0.5) / sd
    return RankTest(n_x, n_y, u, u / pairs, z, upper_tail(z), min(1.0, 2.0 * upper_tail(z_two)))


def mann_whitney_u(x: Iterable[float], y: Iterable[float]) -> RankTest:
    """Rank test on raw samples; equal values are ties."""
    counts: dict[float, list[float]] = {}
    for side, values in ((0, x), (1, y)):
        for value in values:
            counts.setdefault(value, [0.0, 0.0])[side] += 1.0
    return _rank_test((c[0], c[1]) for _, c in sorted(counts.items()))


def mann_whitney_binned(bins_x: Mapping[int, float], bins_y: Mapping[int, float]) -> RankTest:
    """Rank test on histograms ``{bin_index: count}``; values within one bin are ties.

    Only the order of the bins matters, so any monotone bin scale works (the
    metrics module's ``0.001 * 1.03 ** (i - 0.5)`` ms included).
    """
    indexes = sorted(set(bins_x) | set(bins_y))
    return _rank_test((float(bins_x.get(i, 0.0)), float(bins_y.get(i, 0.0))) for i in indexes)


# --------------------------------------------------------------------------- anytime-valid intervals


def rho_squared(tuning: float, alpha: float) -> float:
    """The mixing parameter that makes the sequence tightest near ``tuning`` observations."""
    if not tuning > 0 or not 0 < alpha < 1:
        raise ValueError("need tuning > 0 and 0 < alpha < 1")
    log_a = -2.0 * math.log(alpha)
    return (log_a + math.log(log_a + 1.0)) / tuning


def cs_margin(n: float, *, alpha: float = DEFAULT_ALPHA, tuning: float = DEFAULT_TUNING) -> float:
    """Half-width of the two-sided ``1 - alpha`` sequence for the mean of ``n`` unit-variance observations."""
    if not n > 0:
        raise ValueError("need n > 0")
    r2 = rho_squared(tuning, alpha)
    v = n * r2 + 1.0
    return math.sqrt(2.0 * v / (n * n * r2) * math.log(math.sqrt(v) / alpha))


def cs_p_value(z: float, n: float, *, tuning: float = DEFAULT_TUNING, alpha: float = DEFAULT_ALPHA) -> float:
    """Anytime-valid two-sided p-value of a z statistic after ``n`` observations.

    The smallest level whose sequence excludes the null; ``alpha`` only picks ``rho``.
    """
    r2 = rho_squared(tuning, alpha)
    v = n * r2 + 1.0
    return min(1.0, math.sqrt(v) * math.exp(-z * z * n * r2 / (2.0 * v)))


@dataclass(frozen=True)
class Sequence:
    """An anytime-valid interval: ``lower <= point <= upper`` (units of the estimate)."""

    point: float
    lower: float
    upper: float
    n: float


def _sequence(point: float, variance: float, n: float, alpha: float, tuning: float) -> Sequence:
    half = math.sqrt(variance * n) * cs_margin(n, alpha=alpha, tuning=tuning)
    return Sequence(point, point - half, point + half, n)


def _check(x: float, n: float, arm: str) -> None:
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"arm {arm}: need 0 <= events <= trials, got {x} of {n}")


def difference_sequence(x_b: float, n_b: float, x_a: float, n_a: float, *, alpha: float = DEFAULT_ALPHA,
                        tuning: float = DEFAULT_TUNING) -> Sequence | None:
    """``p_b - p_a`` of two proportions (v2 = b, v1 = a), None when an arm is empty.

    The variance uses ``(x + 1) / (n + 2)`` so that zero events in both arms still
    leave an interval, not a point at 0.
    """
    _check(x_b, n_b, "b")
    _check(x_a, n_a, "a")
    if not n_b or not n_a:
        return None
    s_b, s_a = (x_b + 1) / (n_b + 2), (x_a + 1) / (n_a + 2)
    variance = s_b * (1 - s_b) / n_b + s_a * (1 - s_a) / n_a
    return _sequence(x_b / n_b - x_a / n_a, variance, n_b + n_a, alpha, tuning)


def ratio_sequence(x_b: float, n_b: float, x_a: float, n_a: float, *, alpha: float = DEFAULT_ALPHA,
                   tuning: float = DEFAULT_TUNING) -> Sequence | None:
    """``p_b / p_a`` of two proportions: the sequence on the log ratio (delta method), exponentiated.

    None without an event in each arm, or without variance (every trial an event).
    """
    _check(x_b, n_b, "b")
    _check(x_a, n_a, "a")
    if not x_b or not x_a:
        return None
    p_b, p_a = x_b / n_b, x_a / n_a
    variance = (1 - p_b) / x_b + (1 - p_a) / x_a
    if variance <= 0:
        return None
    log = _sequence(math.log(p_b / p_a), variance, n_b + n_a, alpha, tuning)
    return Sequence(math.exp(log.point), math.exp(log.lower), math.exp(log.upper), log.n)


@dataclass(frozen=True)
class Moments:
    """Count, mean and variance of bin indexes: a latency histogram on a log scale, summarised."""

    n: float
    mean: float
    variance: float


def log_moments(bins: Mapping[int, float]) -> Moments | None:
    """The moments of a histogram ``{bin_index: count}``; None below two values."""
    n = float(sum(bins.values()))
    if n < 2:
        return None
    mean = sum(i * c for i, c in bins.items()) / n
    return Moments(n, mean, sum(c * (i - mean) ** 2 for i, c in bins.items()) / (n - 1.0))


def mean_shift_sequence(b: Moments, a: Moments, *, growth: float, n: float | None = None,
                        alpha: float = DEFAULT_ALPHA, tuning: float = DEFAULT_TUNING) -> Sequence:
    """v2's (b) geometric-mean latency as a multiple of v1's (a), from histograms on a log scale.

    Bin ``i`` holds values near ``c * growth ** i``, so the bin index is a log latency
    and a difference of mean indexes is a log ratio; a bin's width (3 % for the
    recorder's) is the resolution, and the least spread assumed. ``n`` projects the
    sequence to that many values (both arms, at the same split and moments).
    """
    k = 1.0 if n is None else n / (b.n + a.n)
    variance = max(b.variance, 1 / 12) / (b.n * k) + max(a.variance, 1 / 12) / (a.n * k)
    log_step = math.log(growth)
    s = _sequence(b.mean - a.mean, variance, (b.n + a.n) * k, alpha, tuning)
    return Sequence(math.exp(s.point * log_step), math.exp(s.lower * log_step), math.exp(s.upper * log_step), s.n)


@dataclass(frozen=True)
class SrmTest:
    """Users per arm against the configured share: ``p_value`` is anytime-valid (small: assignment broken)."""

    n_b: float
    n_a: float
    expected_share: float
    observed_share: float
    chi_square: float
    p_value: float


def srm_test(n_b: float, n_a: float, share_b: float, *, tuning: float = DEFAULT_TUNING,
             alpha: float = DEFAULT_ALPHA) -> SrmTest | None:
    """Sample-ratio mismatch of ``n_b`` v2 users and ``n_a`` v1 users when v2 should get ``share_b`` (0–1).

    The statistic is the chi-square goodness of fit with one degree of freedom,
    ``z^2`` with ``z = (observed - expected share) / sqrt(share (1 - share) / n)``;
    its p-value is read from the confidence-sequence boundary, so checking it at
    every evaluation stays valid. None when there is nothing to test (no users, or
    a share of 0 or 1).
    """
    if n_b < 0 or n_a < 0:
        raise ValueError("user counts must be non-negative")
    n = n_b + n_a
    if not n or not 0 < share_b < 1:
        return None
    observed = n_b / n
    z = (observed - share_b) / math.sqrt(share_b * (1 - share_b) / n)
    return SrmTest(n_b, n_a, share_b, observed, z * z, cs_p_value(z, n, tuning=tuning, alpha=alpha))

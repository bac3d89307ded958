"""Pure statistics for the gates (stdlib only, no Flask).

Two questions decide a rollout and both need a test, not a bare comparison of
point estimates:

* Is v2's conversion rate at least 95 % of v1's? — :func:`proportion_ratio_test`,
  a one-sided non-inferiority test on the *ratio* of two proportions.
* Is v2 slower than v1? — :func:`mann_whitney_u` / :func:`mann_whitney_binned`,
  a rank test, because latencies are skewed and only their order matters. The
  binned form works directly on the latency histograms ``{bin_index: count}``
  kept by :mod:`flask_v2rollout.metrics.recorder` (bin values grow with the index, so the
  index orders them), in O(bins) instead of O(samples).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


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

"""Statistics on values computed by hand (and one published reference), plus invariants."""
from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_v2rollout.stats import (
    Moments,
    cs_margin,
    cs_p_value,
    difference_sequence,
    log_moments,
    mann_whitney_binned,
    mann_whitney_u,
    mean_shift_sequence,
    proportion_ratio_test,
    ratio_sequence,
    rho_squared,
    srm_test,
    upper_tail,
)


def test_ratio_test_known_values() -> None:
    # p_b = 0.09, p_a = 0.10: log ratio -0.1053605, se = sqrt(0.91/450 + 0.9/500) = 0.0618241,
    # z(0.95) = 1.6448536 → bounds exp(-0.1053605 ∓ 0.1016914); z = (ln 0.9 - ln 0.95) / se.
    t = proportion_ratio_test(450, 5000, 500, 5000)
    assert (t.p_b, t.p_a) == (pytest.approx(0.09), pytest.approx(0.10))
    assert t.ratio == pytest.approx(0.9)
    assert t.lower == pytest.approx(0.812977, abs=1e-6)
    assert t.upper == pytest.approx(0.996338, abs=1e-6)
    assert t.z == pytest.approx(-0.874533, abs=1e-6)
    assert t.p_value == pytest.approx(0.809086, abs=1e-6)
    assert not t.passes and not t.insufficient


def test_ratio_test_equal_large_arms_pass_the_95_margin() -> None:
    # se = sqrt(2 × 0.9 / 10000) = 0.0134164 → lower = exp(-1.6448536 × 0.0134164) = 0.978174
    t = proportion_ratio_test(10_000, 100_000, 10_000, 100_000)
    assert t.ratio == 1.0
    assert t.lower == pytest.approx(0.978174, abs=1e-6)
    assert t.passes and t.p_value is not None and t.p_value < 0.05
    # the same data cannot show superiority
    assert not proportion_ratio_test(10_000, 100_000, 10_000, 100_000, ratio=1.0).passes


def test_ratio_test_pass_is_p_value_below_alpha() -> None:
    for conv_b in range(80, 130, 7):
        t = proportion_ratio_test(conv_b, 1000, 100, 1000)
        assert t.p_value is not None and t.lower is not None
        assert t.passes == (t.p_value <= 0.05 + 1e-12) == (t.lower >= 0.95)


@pytest.mark.parametrize("args,ratio", [
    ((0, 100, 10, 100), 0.0),   # v2 never converted: ratio known, bounds not
    ((10, 100, 0, 100), None),  # v1 never converted: no ratio
    ((0, 0, 10, 100), None),    # no v2 users
    ((0, 100, 0, 100), None),
    ((100, 100, 50, 50), 1.0),  # everyone converted: no variance
])
def test_ratio_test_degenerate_arms_are_insufficient(args: tuple[int, int, int, int], ratio: float | None) -> None:
    t = proportion_ratio_test(*args)
    assert t.insufficient and not t.passes and t.reason
    assert t.ratio == ratio and t.lower is None and t.p_value is None


@pytest.mark.parametrize("args", [(11, 10, 5, 10), (-1, 10, 5, 10), (5, 10, 5, -1)])
def test_ratio_test_rejects_impossible_counts(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        proportion_ratio_test(*args)


def test_mann_whitney_reference_example() -> None:
    # SciPy's documented example (asymptotic method, continuity correction): U = 17, p = 0.11134688653314041
    t = mann_whitney_u([19, 22, 16, 29, 24], [20, 11, 17, 12])
    assert t.u == 17 and t.effect == pytest.approx(0.85)
    assert t.p_two_sided == pytest.approx(0.11134688653314041, rel=1e-9)


def test_mann_whitney_separated_samples_by_hand() -> None:
    # U_x = 0, mean 4.5, var = 3·3·7/12 = 5.25 → z = (0 - 4.5 - 0.5)/2.2912878 = -2.1821789
    t = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert t.u == 0
    assert t.z == pytest.approx(-2.1821789, abs=1e-6)
    assert t.p_greater == pytest.approx(0.985452, abs=1e-6)
    # two-sided uses max(U) = 9: z = 4/2.2912878 = 1.7457431 → 2 × 0.0404278
    assert t.p_two_sided == pytest.approx(0.080856, abs=1e-6)
    assert mann_whitney_u([4, 5, 6], [1, 2, 3]).p_greater == pytest.approx(0.080856 / 2, abs=1e-6)


def test_mann_whitney_tie_correction_by_hand() -> None:
    # x = [1, 2, 2], y = [2, 3]: ranks 1, 3, 3 | 3, 5 → R_x = 7, U_x = 1; ties: one group of 3 → 24
    # var = 6/12 × (6 - 24/20) = 2.4 → z = (1 - 3 - 0.5)/1.5491933 = -1.6137431
    t = mann_whitney_u([1, 2, 2], [2, 3])
    assert t.u == 1
    assert t.z == pytest.approx(-1.6137431, abs=1e-6)
    assert t.p_greater == pytest.approx(1 - upper_tail(1.6137431), abs=1e-6)


def test_identical_distributions_give_one_sided_half() -> None:
    same = {i: 50.0 for i in range(100, 140)}
    t = mann_whitney_binned(same, same)
    assert t.effect == 0.5
    assert t.p_greater == pytest.approx(0.5, abs=0.01)
    assert t.p_two_sided == 1.0
    everything_tied = mann_whitney_u([3, 3, 3], [3, 3])
    assert (everything_tied.z, everything_tied.p_greater, everything_tied.p_two_sided) == (0.0, 0.5, 1.0)


def test_shifted_latency_is_detected_one_sided() -> None:
    v1 = {i: 100.0 for i in range(200, 220)}
    v2 = {i + 3: 100.0 for i in range(200, 220)}
    slower = mann_whitney_binned(v2, v1)
    assert slower.p_greater < 1e-6 and slower.effect > 0.5
    assert mann_whitney_binned(v1, v2).p_greater > 0.999


def test_empty_sample_is_an_error() -> None:
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError):
        mann_whitney_binned({1: 3.0}, {1: 0.0})


samples = st.lists(st.integers(0, 6), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(samples, samples)
def test_binned_equals_raw_and_u_statistics_complement(x: list[int], y: list[int]) -> None:
    raw = mann_whitney_u(x, y)
    binned = mann_whitney_binned(
        {v: float(x.count(v)) for v in set(x)}, {v: float(y.count(v)) for v in set(y)}
    )
    assert binned.u == pytest.approx(raw.u)
    assert binned.p_greater == pytest.approx(raw.p_greater)
    assert binned.p_two_sided == pytest.approx(raw.p_two_sided)
    swapped = mann_whitney_u(y, x)
    assert raw.u + swapped.u == pytest.approx(len(x) * len(y))
    assert raw.p_two_sided == pytest.approx(swapped.p_two_sided)
    # brute force: U counts pairs x > y, ties one half
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x, y))
    assert raw.u == pytest.approx(pairs)
    assert 0.0 <= raw.p_greater <= 1.0 and not math.isnan(raw.p_two_sided)


# --------------------------------------------------------------------------- anytime-valid intervals


def test_confidence_sequence_margin_by_hand() -> None:
    # rho² = (-2 ln 0.05 + ln(-2 ln 0.05 + 1)) / 10 000 = (5.991465 + 1.944691) / 10 000 = 7.936156e-4
    assert rho_squared(10_000, 0.05) == pytest.approx(7.936156e-4, rel=1e-6)
    # n = 10 000: v = n rho² + 1 = 8.936156; margin = sqrt(2 v / (n² rho²) · ln(sqrt(v) / 0.05))
    #           = sqrt(2.252012e-4 × ln 59.78682) = sqrt(2.252012e-4 × 4.090784) = 0.0303521
    assert cs_margin(10_000, alpha=0.05, tuning=10_000) == pytest.approx(0.0303521, abs=1e-7)
    # tightest near the tuning point, and always wider than the fixed-n 95 % interval (1.96 / sqrt(n))
    for n in (10, 100, 1_000, 10_000, 100_000, 10**7):
        assert cs_margin(n) * math.sqrt(n) > 1.96
    assert cs_margin(10_000, tuning=10_000) < cs_margin(10_000, tuning=1_000)
    assert cs_margin(10_000, tuning=10_000) < cs_margin(10_000, tuning=100_000)


def test_ratio_and_difference_sequences_by_hand() -> None:
    # equal 30 % in both arms, 4 000 v2 users and 36 000 v1 users (a canary at 10 %):
    # V = 0.7/1200 + 0.7/10800 = 6.481481e-4, n = 40 000, half-width on the log = sqrt(V n) · margin(n)
    s = ratio_sequence(1_200, 4_000, 10_800, 36_000)
    assert s is not None and s.point == pytest.approx(1.0)
    half = math.sqrt(6.481481e-4 * 40_000) * cs_margin(40_000)
    assert (s.lower, s.upper) == (pytest.approx(math.exp(-half)), pytest.approx(math.exp(half)))
    assert s.lower == pytest.approx(0.923474, abs=1e-6)
    assert ratio_sequence(0, 100, 10, 100) is None and ratio_sequence(100, 100, 50, 50) is None
    # no errors in either arm still leaves an interval: variance from (0 + 1) / (n + 2)
    d = difference_sequence(0, 1_000, 0, 1_000)
    assert d is not None and d.point == 0 and d.lower == -d.upper and d.upper > 0
    assert difference_sequence(5, 10, 0, 0) is None
    with pytest.raises(ValueError):
        difference_sequence(11, 10, 1, 10)


def test_latency_shift_is_a_ratio_of_geometric_means() -> None:
    same = log_moments({100: 50.0, 110: 50.0})
    shifted = log_moments({103: 50.0, 113: 50.0})  # three bins of 3 % slower
    assert same is not None and shifted is not None and log_moments({1: 1.0}) is None
    s = mean_shift_sequence(shifted, same, growth=1.03)
    assert s.point == pytest.approx(1.03**3) and s.lower < s.point < s.upper
    wider, narrower = s, mean_shift_sequence(shifted, same, growth=1.03, n=10_000)
    assert narrower.upper - narrower.lower < wider.upper - wider.lower
    assert mean_shift_sequence(Moments(10, 5.0, 0.0), Moments(10, 5.0, 0.0), growth=1.03).upper > 1.0


def test_srm_by_hand() -> None:
    assert srm_test(1_000, 9_000, 0.10).p_value == 1.0  # type: ignore[union-attr]
    # 500 of 10 000 at 10 %: z = (0.05 - 0.10) / sqrt(0.09 / 10 000) = -16.67, chi-square 277.78
    t = srm_test(500, 9_500, 0.10)
    assert t is not None and t.chi_square == pytest.approx(277.7778, abs=1e-3) and t.p_value < 1e-40
    assert srm_test(0, 0, 0.1) is None and srm_test(5, 5, 0.0) is None
    # the p-value is below alpha exactly when the sequence for the share excludes the configured share
    n, p0 = 10_000, 0.10
    edge = math.sqrt(p0 * (1 - p0)) * cs_margin(n)
    assert cs_p_value((edge * 1.001) / math.sqrt(p0 * (1 - p0) / n), n) < 0.05
    assert cs_p_value((edge * 0.999) / math.sqrt(p0 * (1 - p0) / n), n) > 0.05


def _coverage(sequences: int, users: int, look_every: int, rng: random.Random) -> tuple[float, float]:
    """Share of sequences whose interval holds the true difference (0) at every look: (anytime-valid, fixed-n)."""
    held = held_fixed = 0
    for _ in range(sequences):
        x_b = x_a = 0
        ok = ok_fixed = True
        for n in range(1, users + 1):
            x_b += rng.random() < 0.3
            x_a += rng.random() < 0.3
            if n >= 100 and n % look_every == 0:
                s = difference_sequence(x_b, n, x_a, n)
                assert s is not None
                ok = ok and s.lower <= 0 <= s.upper
                # the same estimate's fixed-n 95 % half-width: 1.96 standard errors
                fixed = 1.96 * (s.upper - s.point) / (cs_margin(2 * n) * math.sqrt(2 * n))
                ok_fixed = ok_fixed and abs(s.point) <= fixed
        held += ok
        held_fixed += ok_fixed
    return held / sequences, held_fixed / sequences


def test_coverage_holds_at_every_look_by_simulation() -> None:
    # 200 A/A sequences of 3 000 users an arm, looked at every 20 users from 100 on (146 looks each)
    anytime, fixed = _coverage(200, 3_000, 20, random.Random(20261201))
    assert anytime >= 0.95 - 0.02  # nominal 95 %, tolerance for 200 sequences
    assert fixed < 0.80  # the fixed-n 95 % interval read at every look: far below its nominal coverage

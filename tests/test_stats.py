"""Statistics on values computed by hand (and one published reference), plus invariants."""
from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_v2rollout.stats import mann_whitney_binned, mann_whitney_u, proportion_ratio_test, upper_tail


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

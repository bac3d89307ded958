"""Bucketing is the runbook's md5 rule, extended to 0.01 % without moving anyone."""
from __future__ import annotations

import hashlib

import pytest

from flask_v2rollout.bucketing import assign, bucket, fine_bucket, in_rollout

IDS = [f"user-{i}" for i in range(100_000)]


def runbook_rule(uid: str, pct: int) -> bool:
    return int(hashlib.md5(uid.encode()).hexdigest(), 16) % 100 < pct


@pytest.mark.parametrize("pct", [10, 50])
def test_equals_runbook_md5_rule_and_share(pct: int) -> None:
    ours = [in_rollout(uid, pct) for uid in IDS]
    assert ours == [runbook_rule(uid, pct) for uid in IDS]
    share = sum(ours) / len(IDS) * 100
    assert abs(share - pct) <= 0.5, share


def test_every_integer_percentage_matches_runbook() -> None:
    sample = IDS[:2_000]
    for pct in range(0, 101):
        assert [in_rollout(u, pct) for u in sample] == [runbook_rule(u, pct) for u in sample]


def test_monotonic_from_hundredth_to_full() -> None:
    steps = [0, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 9.99, 10, 10.01, 25, 33.33, 50, 75, 99.99, 100]
    sample = IDS[:20_000]
    previous = [False] * len(sample)
    for pct in steps:
        current = [in_rollout(u, pct) for u in sample]
        assert all(c for p, c in zip(previous, current, strict=True) if p), f"a user left v2 when going to {pct}"
        previous = current
    assert all(previous)


def test_hundredths_give_proportional_shares() -> None:
    share = sum(in_rollout(u, 0.5) for u in IDS) / len(IDS) * 100
    assert abs(share - 0.5) < 0.1
    share = sum(in_rollout(u, 10.05) for u in IDS) / len(IDS) * 100
    assert abs(share - 10.05) <= 0.5


def test_bounds() -> None:
    assert not any(in_rollout(u, 0) for u in IDS[:5_000])
    assert all(in_rollout(u, 100) for u in IDS[:5_000])


def test_salt_gives_independent_cohort() -> None:
    sample = IDS[:40_000]
    plain = [in_rollout(u, 50) for u in sample]
    salted = [in_rollout(u, 50, salt="pricing") for u in sample]
    both = sum(a and b for a, b in zip(plain, salted, strict=True)) / len(sample)
    assert abs(both - 0.25) < 0.01  # independent halves overlap on a quarter
    assert abs(sum(salted) / len(sample) - 0.5) < 0.01


def test_documented_vectors() -> None:
    # The vectors printed in docs/bucketing.md, for other languages to check against.
    assert bucket("user-1") == 20 and fine_bucket("user-1") == 2088
    assert bucket("42") == 74 and fine_bucket("42") == 7451
    assert bucket("patrick@example.com") == 70 and fine_bucket("patrick@example.com") == 7023
    assert bucket("user-1", salt="pricing") == 20 and fine_bucket("user-1", salt="pricing") == 2095
    assert assign("user-1", 20) == "v1" and assign("user-1", 21) == "v2"
    assert assign("user-1", 20.88) == "v1" and assign("user-1", 20.89) == "v2"

"""branchnet.study.early: rank agreement of early and final Δ_MTL, against direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from branchnet.errors import BadInput
from branchnet.study.early import group_agreement, halving_cost, rank_agreement, top_half


def _ranks(x):
    """Average ranks, by hand (ties share the mean of their positions)."""
    x = np.asarray(x, dtype=float)
    out = np.empty(len(x))
    for i, v in enumerate(x):
        out[i] = np.sum(x < v) + (np.sum(x == v) + 1) / 2
    return out


def test_group_agreement_against_the_definition():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 9))
        early = rng.integers(0, 4, n).astype(float)  # ties on purpose
        final = rng.normal(size=n)
        rho, survived, loss = group_agreement(early, final)
        ra, rb = _ranks(early), _ranks(final)
        expected = 0.0 if np.ptp(early) == 0 else np.corrcoef(ra, rb)[0, 1]
        assert rho == pytest.approx(expected, abs=1e-12)
        kept = sorted(range(n), key=lambda i: (-early[i], i))[: math.ceil(n / 2)]
        best = int(np.argmax(final))
        assert survived == (best in kept)
        assert loss == pytest.approx(final.max() - max(final[i] for i in kept))
        assert loss >= 0 and (loss == 0) == survived


def test_top_half_breaks_ties_by_order():
    assert list(top_half([1.0, 3.0, 3.0, 0.0, 3.0])) == [1, 2, 4]
    assert list(top_half([2.0, 2.0, 2.0, 2.0])) == [0, 1]


def test_rank_agreement_groups_and_epochs():
    # budget A: 4 trees at seeds 0 and 1; epoch 1 reverses the final order, epoch 2 matches it
    early = {f"a{i}": {s: [-float(i), float(i)] for s in (0, 1)} for i in range(4)}
    final = {f"a{i}": {s: float(i) + s for s in (0, 1)} for i in range(4)}
    # budget B: 2 trees only -> not a group
    early.update({"b0": {0: [1.0, 1.0]}, "b1": {0: [0.0, 0.0]}})
    final.update({"b0": {0: 1.0}, "b1": {0: 0.0}})
    out = rank_agreement(early, final, {"A": [f"a{i}" for i in range(4)], "B": ["b0", "b1"]})
    assert [a.epoch for a in out] == [1, 2]
    assert out[0].groups == 2 and out[0].spearman == pytest.approx(-1.0)
    assert out[0].survival == 0.0 and out[0].loss == pytest.approx(2.0)  # kept a0, a1: best kept 1 below 3
    assert out[1].spearman == pytest.approx(1.0) and out[1].survival == 1.0 and out[1].loss == 0.0
    assert out[1].per_group == pytest.approx((1.0, 1.0))
    rho = stats.spearmanr([-0.0, -1, -2, -3], [0, 1, 2, 3]).statistic
    assert out[0].per_group[0] == pytest.approx(rho)


def test_rank_agreement_needs_three_trees():
    with pytest.raises(BadInput, match="3 trees"):
        rank_agreement({"a": {0: [1.0]}, "b": {0: [2.0]}}, {"a": {0: 1.0}, "b": {0: 2.0}}, {"A": ["a", "b"]})


def test_halving_cost():
    assert halving_cost(4, 1, 8) == pytest.approx((8 * 1 + 4 * 3) / 32)
    assert halving_cost(4, 4, 7) == 1.0
    assert halving_cost(3, 2, 5) == pytest.approx((5 * 2 + 3 * 1) / 15)
    with pytest.raises(BadInput):
        halving_cost(4, 5, 8)

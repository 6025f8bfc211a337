"""Study statistics against direct computations: brute-force Pareto front, scipy's Spearman,
percentileofscore and bootstrap."""

import itertools

import numpy as np
import pytest
from scipy import stats

from branchnet.errors import BadInput
from branchnet.study import (Correlation, Difference, mean_difference, paired_difference, pareto_front, percentile,
                             spearman_correlation, verdict)


def brute_front(params, delta):
    out = []
    for m in range(len(params)):
        dominated = any(params[j] <= params[m] and delta[j] >= delta[m]
                        and (params[j] < params[m] or delta[j] > delta[m]) for j in range(len(params)) if j != m)
        out.append(not dominated)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_is_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 14))
    params = rng.integers(1, 6, size=m).astype(float)  # many ties in params ...
    delta = rng.integers(-3, 3, size=m).astype(float)  # ... and in Δ
    assert list(pareto_front(params, delta)) == brute_front(params, delta)


def test_pareto_front_bad_input():
    with pytest.raises(BadInput, match="one value per network"):
        pareto_front([1, 2], [0.5])


def test_percentile_is_percentileofscore():
    rng = np.random.default_rng(0)
    pop = rng.integers(0, 5, size=30).astype(float)
    for v in (-1.0, 0.0, 2.0, 2.5, 4.0, 9.0):
        assert percentile(v, pop) == pytest.approx(stats.percentileofscore(pop, v, kind="mean"))


def test_mean_difference():
    rng = np.random.default_rng(1)
    measure = rng.normal(2.0, 1.0, size=3)
    random = [rng.normal(0.0, 1.0, size=3) for _ in range(8)]
    got = mean_difference(measure, random, n_boot=4000, seed=5)
    assert got.diff == pytest.approx(measure.mean() - np.mean([r.mean() for r in random]))
    assert got.low < got.diff < got.high and (got.trees, got.seeds) == (8, 3)
    assert got == mean_difference(measure, random, n_boot=4000, seed=5)  # deterministic per seed
    # with one seed per tree the two-stage bootstrap is the two-sample bootstrap of scipy
    own = rng.normal(1.0, 1.0, size=6)
    others = rng.normal(0.0, 2.0, size=10)
    mine = mean_difference(own, [[x] for x in others], n_boot=20000, seed=0)
    ref = stats.bootstrap((own, others), lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis),
                          n_resamples=20000, method="percentile", random_state=0).confidence_interval
    spread = mine.high - mine.low
    assert mine.low == pytest.approx(ref.low, abs=0.05 * spread)
    assert mine.high == pytest.approx(ref.high, abs=0.05 * spread)
    # nothing varies: a degenerate interval
    flat = mean_difference([1.0, 1.0], [[0.5, 0.5], [0.5, 0.5]], n_boot=100)
    assert (flat.low, flat.diff, flat.high) == (0.5, 0.5, 0.5) and flat.outcome == "better"
    with pytest.raises(BadInput, match="no random trees"):
        mean_difference([1.0], [])
    with pytest.raises(BadInput, match="NaN"):
        mean_difference([np.nan], [[1.0]])


def test_paired_difference_against_its_definition():
    rng = np.random.default_rng(3)
    offsets = np.array([-3.0, 4.0, 1.0])  # what a seed gives every tree alike
    measure = {s: 1.0 + offsets[s] + rng.normal(0, 0.1) for s in range(3)}
    random = [{s: float(rng.normal(0, 0.5)) + offsets[s] for s in range(3)} for _ in range(5)]
    got = paired_difference(measure, random, n_boot=4000, seed=2)
    per_seed = [measure[s] - np.mean([r[s] for r in random]) for s in range(3)]
    assert got.diff == pytest.approx(np.mean(per_seed)) and (got.trees, got.seeds) == (5, 3)
    assert got.low < got.diff < got.high and got.outcome == "better"  # the offsets cancel
    unpaired = mean_difference([measure[s] for s in range(3)], [[r[s] for s in range(3)] for r in random],
                               n_boot=4000, seed=2)
    assert got.diff == pytest.approx(unpaired.diff) and unpaired.outcome == "unclear"
    assert got == paired_difference(measure, random, n_boot=4000, seed=2)  # deterministic per seed
    # the bootstrap distribution, enumerated: 2 seeds and 2 random trees drawn with replacement
    # (16 equally likely resamples) against many drawn ones
    m, r = {0: 1.0, 1: 3.0}, [{0: 0.0, 1: 1.0}, {0: 2.0, 1: 0.5}]
    exact = []
    for s in itertools.product(range(2), repeat=2):
        for t in itertools.product(range(2), repeat=2):
            exact.append(np.mean([m[k] - np.mean([r[j][k] for j in t]) for k in s]))
    drawn = paired_difference(m, r, n_boot=40000, seed=0, level=0.6)
    low, high = np.percentile(np.repeat(exact, 2500), [20, 80])  # away from the steps of the distribution
    assert drawn.low == pytest.approx(low, abs=0.1) and drawn.high == pytest.approx(high, abs=0.1)
    # fewer than two common seeds: no paired comparison
    assert paired_difference({0: 1.0}, [{0: 0.0}]) is None
    assert paired_difference({0: 1.0, 1: 2.0}, [{0: 0.0, 2: 1.0}]) is None
    with pytest.raises(BadInput, match="no random trees"):
        paired_difference({0: 1.0, 1: 1.0}, [])


def test_spearman_correlation():
    rng = np.random.default_rng(2)
    x = rng.random(25)
    y = -2 * x + rng.normal(0, 0.3, size=25)
    got = spearman_correlation(x, y, n_boot=4000, seed=1)
    ref = stats.spearmanr(x, y)
    assert got.rho == pytest.approx(ref.statistic) and got.p == pytest.approx(ref.pvalue)
    assert got.low <= got.rho <= got.high and got.n == 25
    boot = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
                           n_resamples=400, method="percentile", random_state=0).confidence_interval
    assert got.low == pytest.approx(boot.low, abs=0.07) and got.high == pytest.approx(boot.high, abs=0.07)
    assert np.isnan(spearman_correlation([1, 1, 1], [1, 2, 3]).rho)
    with pytest.raises(BadInput, match="one pair per tree"):
        spearman_correlation([1, 2, 3], [1, 2])


def test_verdict():
    better, worse, unclear = (Difference(2, 1, 3, 0.95, 6, 3), Difference(-2, -3, -1, 0.95, 6, 3),
                              Difference(0.1, -1, 1, 0.95, 6, 3))
    assert verdict("rsa", [unclear, worse, unclear]) == (
        "RSA's tree did not beat random trees of the same size at any of 3 budgets, and was worse at 1")
    assert verdict("rsa", [better, better]) == "RSA's tree beat random trees of the same size at every budget (2 of 2)"
    line = verdict("fafs", [better, unclear, worse], Correlation(-0.6, 0.001, -0.8, -0.3, 0.95, 30))
    assert line.startswith("FAFS's tree beat random trees of the same size at 1 of 3 budgets and did not at 2")
    assert "predicted Δ_MTL (Spearman ρ = -0.60" in line and "\n" not in line
    assert "did not predict" in verdict("rsa", [unclear], Correlation(-0.2, 0.3, -0.6, 0.2, 0.95, 20))
    assert "wrong way round" in verdict("rsa", [unclear], Correlation(0.5, 0.01, 0.2, 0.8, 0.95, 20))

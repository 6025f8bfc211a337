"""Is the affinity's tree any good? The statistics of docs/design.md, "Evaluation".

* :func:`pareto_front`: the trained networks no other network beats on both params and Δ_MTL;
* :func:`mean_difference`: a measure's tree's mean Δ_MTL over seeds minus the mean over the
  random trees of the same budget, with a percentile bootstrap interval (Efron & Tibshirani,
  "An Introduction to the Bootstrap", 1993, Ch. 13) that resamples trees and seeds;
* :func:`paired_difference`: the same difference taken seed by seed (every tree of a seed
  shares that seed's offset against the single-task baselines, docs/evaluate.md, "Seeds"),
  with a bootstrap that resamples the random trees and, jointly for all trees, the seeds;
* :func:`percentile`: where a tree's Δ_MTL lies among a budget's trees;
* :func:`spearman_correlation`: how far a measure's dissimilarity predicts Δ_MTL (scipy's
  Spearman ρ and p-value, with a bootstrap interval over trees);
* :func:`verdict`: one line in plain words.

Δ_MTL is in percent (survey Eq. 10, :mod:`branchnet.tasks.delta`), higher is better.
Everything is seeded and deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from branchnet.errors import BadInput

#: Bootstrap resamples by default.
BOOTSTRAP = 2000
#: Confidence level of the intervals.
LEVEL = 0.95


def pareto_front(params: Any, delta: Any) -> np.ndarray:
    """(M,) bool: network m is on the front when no other network has ``params <= params[m]``
    and ``delta >= delta[m]`` with one of the two strict (docs/design.md, "Pareto front").

    ``params`` (M,) parameters, ``delta`` (M,) mean test Δ_MTL over seeds. Two networks
    equal in both are both on the front (neither beats the other).
    """
    p = np.asarray(params, dtype=np.float64).reshape(-1)
    d = np.asarray(delta, dtype=np.float64).reshape(-1)
    if p.shape != d.shape:
        raise BadInput(f"params ({p.shape[0]}) and Δ_MTL ({d.shape[0]}) must have one value per network")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(d))):
        raise BadInput("params and Δ_MTL must be finite to find the Pareto front")
    # sort by params ascending, Δ descending: a network is dominated iff an earlier one (fewer or
    # equal params) has a higher Δ, or an equal Δ with strictly fewer params
    order = np.lexsort((-d, p))
    on = np.zeros(len(p), dtype=bool)
    best = -np.inf  # highest Δ among networks with strictly fewer params
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and p[order[j]] == p[order[i]]:
            j += 1
        group = order[i:j]  # equal params; the first holds the group's highest Δ
        top = d[group[0]]
        for m in group:
            on[m] = d[m] == top and d[m] > best
        best = max(best, top)
        i = j
    return on


@dataclass(frozen=True)
class Difference:
    """A measure's tree against random trees of its budget (Δ_MTL in percentage points).

    ``diff`` = its mean over seeds minus the mean over random trees of their mean over
    seeds; ``low``/``high`` the bootstrap interval at ``level``; ``trees``, ``seeds`` the
    number of random trees and of the measure tree's seeds.
    """

    diff: float
    low: float
    high: float
    level: float
    trees: int
    seeds: int

    @property
    def outcome(self) -> str:
        """``"better"`` (interval above 0), ``"worse"`` (below 0) or ``"unclear"``."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "unclear"


def _values(x: Any, what: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise BadInput(f"{what} has no value; every tree needs at least one trained seed")
    if not np.all(np.isfinite(v)):
        raise BadInput(f"{what} holds NaN or Inf; retrain the networks whose Δ_MTL is missing")
    return v


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise BadInput(f"confidence level {level} must lie in (0, 1), e.g. 0.95")
    if n_boot < 1:
        raise BadInput(f"{n_boot} bootstrap resamples: give at least 1 (e.g. 2000)")


def mean_difference(measure: Any, random: Sequence[Any], n_boot: int = BOOTSTRAP, seed: int = 0,
                    level: float = LEVEL) -> Difference:
    """A measure's tree (Δ_MTL per seed, (S,)) against random trees (one (S_r,) array each).

    The interval is the percentile bootstrap of ``diff``: each resample draws the measure
    tree's seeds with replacement, the random trees with replacement, and within every
    drawn random tree its seeds with replacement (a two-stage bootstrap over trees and
    seeds).
    """
    _check_level(level, n_boot)
    own = _values(measure, "the measure tree's Δ_MTL")
    if len(random) == 0:
        raise BadInput("no random trees to compare with; train some (evaluate --random K)")
    trees = [_values(r, f"random tree {i}'s Δ_MTL") for i, r in enumerate(random)]
    diff = float(own.mean() - np.mean([t.mean() for t in trees]))
    rng = np.random.default_rng(seed)
    own_boot = own[rng.integers(0, len(own), size=(n_boot, len(own)))].mean(axis=1)
    tree_boot = np.stack([t[rng.integers(0, len(t), size=(n_boot, len(t)))].mean(axis=1) for t in trees])  # (R, B)
    pick = rng.integers(0, len(trees), size=(n_boot, len(trees)))
    random_boot = tree_boot[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    low, high = np.percentile(own_boot - random_boot, [50 * (1 - level), 50 * (1 + level)])
    return Difference(diff, float(low), float(high), level, len(trees), len(own))


def paired_difference(measure: Mapping[int, float], random: Sequence[Mapping[int, float]],
                      n_boot: int = BOOTSTRAP, seed: int = 0, level: float = LEVEL) -> Difference | None:
    """A measure's tree against random trees, seed by seed; ``None`` below two common seeds.

    ``measure`` and each of ``random`` map an evaluation seed to the tree's Δ_MTL. Over the
    seeds S that every tree has, ``d_s`` = the measure tree's Δ_MTL at s minus the mean of
    the random trees' at s, and ``diff`` = the mean of ``d_s``. Seed s trains every tree from
    the same init offset against the baselines, so taking the difference within a seed
    removes that common offset (a paired comparison). The interval is the percentile
    bootstrap of ``diff``: each resample draws the random trees with replacement and the
    seeds with replacement, the same seeds for every tree.
    """
    _check_level(level, n_boot)
    if len(random) == 0:
        raise BadInput("no random trees to compare with; train some (evaluate --random K)")
    common = sorted(set(measure).intersection(*[set(r) for r in random]))
    if len(common) < 2:
        return None
    own = _values([measure[s] for s in common], "the measure tree's Δ_MTL")
    others = np.stack([_values([r[s] for s in common], f"random tree {i}'s Δ_MTL")
                       for i, r in enumerate(random)])  # (R, S)
    per_seed = own - others.mean(axis=0)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, len(common), size=(n_boot, len(common)))  # (B, S)
    trees = rng.integers(0, len(random), size=(n_boot, len(random)))  # (B, R)
    random_boot = others[trees[:, :, None], seeds[:, None, :]].mean(axis=1)  # (B, S)
    boot = (own[seeds] - random_boot).mean(axis=1)
    low, high = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return Difference(float(per_seed.mean()), float(low), float(high), level, len(random), len(common))


def percentile(value: float, population: Any) -> float:
    """Percent of ``population`` (Δ_MTL of a budget's trees, (M,)) below ``value``, ties
    counting half: ``100 * (#{x < v} + #{x == v} / 2) / M`` (``scipy.stats.percentileofscore``,
    kind ``"mean"``). 100 means better than every other tree."""
    pop = _values(population, "the budget's Δ_MTL")
    v = float(value)
    return float(100.0 * (np.sum(pop < v) + 0.5 * np.sum(pop == v)) / len(pop))


@dataclass(frozen=True)
class Correlation:
    """Spearman's ρ between a measure's dissimilarity and Δ_MTL over ``n`` trees, scipy's
    two-sided p-value, and a bootstrap interval (NaN where undefined, e.g. constant input)."""

    rho: float
    p: float
    low: float
    high: float
    level: float
    n: int


def spearman_correlation(dissimilarity: Any, delta: Any, n_boot: int = BOOTSTRAP, seed: int = 0,
                         level: float = LEVEL) -> Correlation:
    """ρ of ``dissimilarity`` (M,) against mean test Δ_MTL (M,) over trained trees
    (``scipy.stats.spearmanr``), with a percentile bootstrap interval over trees (pairs
    resampled with replacement; resamples with a constant side are skipped).

    Negative ρ means "less dissimilar trees do better", what the method assumes.
    """
    from scipy.stats import rankdata, spearmanr

    _check_level(level, n_boot)
    x = _values(dissimilarity, "the dissimilarities")
    y = _values(delta, "the Δ_MTL values")
    if x.shape != y.shape:
        raise BadInput(f"{x.shape[0]} dissimilarities but {y.shape[0]} Δ_MTL values: give one pair per tree")
    nan = float("nan")
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return Correlation(nan, nan, nan, nan, level, len(x))
    result = spearmanr(x, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    norm = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    ok = norm > 0
    rhos = (rx * ry).sum(axis=1)[ok] / norm[ok]
    low, high = (np.percentile(rhos, [50 * (1 - level), 50 * (1 + level)]) if len(rhos) else (nan, nan))
    return Correlation(float(result.statistic), float(result.pvalue), float(low), float(high), level, len(x))


def _name(measure: str) -> str:
    return measure.upper() if measure.lower() in ("rsa", "fafs", "tag") else measure


def verdict(measure: str, comparisons: Sequence[Difference], correlation: Correlation | None = None,
            alpha: float = 0.05) -> str:
    """One line in plain words on a measure's trees against random trees of the same size.

    A budget counts as "beat" when the interval of :func:`mean_difference` lies above 0,
    "lost" when below, else "no clear difference". With ``correlation``, a clause says whether
    the dissimilarity predicted Δ_MTL (ρ < 0 with p < ``alpha``), did not, or predicted it the
    wrong way round (ρ > 0 with p < ``alpha``). E.g. "RSA's tree did not beat random trees of
    the same size at 2 of 3 budgets; its dissimilarity did not predict Δ_MTL (Spearman ρ = -0.21,
    p = 0.31, n = 24)".
    """
    name = _name(measure)
    total = len(comparisons)
    if total == 0:
        head = f"{name}'s tree was not compared with random trees (no budget had any)"
    else:
        beat = sum(c.outcome == "better" for c in comparisons)
        lost = sum(c.outcome == "worse" for c in comparisons)
        plural = "budget" if total == 1 else "budgets"
        if beat == total:
            head = f"{name}'s tree beat random trees of the same size at {'the' if total == 1 else 'every'} " \
                   f"budget ({beat} of {total})"
        elif beat == 0:
            lost_part = f", and was worse at {lost}" if lost else ""
            head = (f"{name}'s tree did not beat random trees of the same size at any of {total} {plural}"
                    if total > 1 else f"{name}'s tree did not beat random trees of the same size") + lost_part
        else:
            head = (f"{name}'s tree beat random trees of the same size at {beat} of {total} budgets and did not "
                    f"at {total - beat}" + (f" (worse at {lost})" if lost else ""))
    if correlation is None:
        return head
    if not np.isfinite(correlation.rho):
        tail = f"its dissimilarity's correlation with Δ_MTL is undefined (n = {correlation.n})"
    else:
        figures = f"Spearman ρ = {correlation.rho:+.2f}, p = {correlation.p:.2g}, n = {correlation.n}"
        if correlation.rho < 0 and correlation.p < alpha:
            tail = f"its dissimilarity predicted Δ_MTL ({figures})"
        elif correlation.rho > 0 and correlation.p < alpha:
            tail = f"its dissimilarity predicted Δ_MTL the wrong way round: more dissimilar trees did better ({figures})"
        else:
            tail = f"its dissimilarity did not predict Δ_MTL ({figures})"
    return f"{head}; {tail}"

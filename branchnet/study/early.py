"""Early stopping, measured: does a tree's ranking after epoch e predict its final ranking?

Successive halving (Jamieson & Talwalkar, "Non-stochastic Best Arm Identification and
Hyperparameter Optimization", AISTATS 2016) trains every candidate for a few epochs and keeps
the better half. It saves compute only if the early ranking keeps the best candidates. This
module measures that on a study's own networks, from numbers alone (no torch):

* ``early[tree, seed, epoch]``: the validation Δ_MTL of a network after each epoch (percent,
  from its ``history.csv`` and the single-task baselines' validation metrics);
* ``final[tree, seed]``: its test Δ_MTL after the last epoch (``trees.csv``).

For every group of trees that compete (one budget's trees at one seed), :func:`rank_agreement`
gives, per epoch, the Spearman ρ between the early and the final values, whether the final best
tree survives a cut to the top half (ties broken against it), and the loss of keeping the top
half: the final best minus the best final value among the kept trees (points of Δ_MTL, >= 0).
:func:`halving_cost` is the share of training epochs a cut after epoch e costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from branchnet.errors import BadInput


@dataclass(frozen=True)
class EpochAgreement:
    """One epoch's agreement over the groups (budget, seed) that have at least 3 trees.

    ``spearman``: the mean over groups of ρ(early at this epoch, final); ``survival``: the
    share of groups whose final best tree is in the top half at this epoch; ``loss``: the mean
    over groups of (final best - best final among the top half), points of Δ_MTL; ``groups``:
    how many groups were scored; ``per_group``: ρ of each group, in ``groups`` order.
    """

    epoch: int
    spearman: float
    survival: float
    loss: float
    groups: int
    per_group: tuple[float, ...]


def top_half(values: np.ndarray) -> np.ndarray:
    """Indices of the ``ceil(n / 2)`` largest values (stable: earlier indices win ties)."""
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
    return order[: math.ceil(len(order) / 2)]


def group_agreement(early: Sequence[float], final: Sequence[float]) -> tuple[float, bool, float]:
    """ρ, survival of the final best and the loss of a top-half cut, for one group of trees.

    ``early`` and ``final``: one value per tree (Δ_MTL, higher is better), at least 3 trees.
    The final best survives when a tree with the best final value is kept; a constant
    ``early`` (no ranking at all) has ρ = 0.
    """
    early = np.asarray(early, dtype=np.float64)
    final = np.asarray(final, dtype=np.float64)
    if early.shape != final.shape or early.ndim != 1 or len(early) < 3:
        raise BadInput(f"a group needs at least 3 trees with an early and a final value each, got {early.shape} "
                       f"and {final.shape}")
    rho = 0.0 if np.ptp(early) == 0 else float(stats.spearmanr(early, final).statistic)
    kept = top_half(early)
    best = final.max()
    survived = bool(np.any(final[kept] == best))
    return rho, survived, float(best - final[kept].max())


def rank_agreement(early: Mapping[str, Mapping[int, Sequence[float]]], final: Mapping[str, Mapping[int, float]],
                   groups: Mapping[str, Sequence[str]]) -> list[EpochAgreement]:
    """Per epoch, how well the early ranking of each group's trees predicts the final one.

    ``early[tree][seed]``: the tree's validation Δ_MTL after epochs 1..E; ``final[tree][seed]``:
    its final test Δ_MTL; ``groups[name]``: the trees that compete (one budget). Every seed at
    which a group has at least 3 trees with both values is one group of the statistics.
    """
    scored: list[tuple[list[np.ndarray], np.ndarray]] = []
    for trees in groups.values():
        seeds = sorted({s for t in trees for s in early.get(t, {}) if s in final.get(t, {})})
        for seed in seeds:
            members = [t for t in trees if seed in early.get(t, {}) and seed in final.get(t, {})]
            if len(members) < 3:
                continue
            curves = [np.asarray(early[t][seed], dtype=np.float64) for t in members]
            scored.append((curves, np.array([final[t][seed] for t in members], dtype=np.float64)))
    if not scored:
        raise BadInput("no budget has 3 trees trained at one seed; rank agreement needs a study "
                       "(`branchnet evaluate --random 2` or more)")
    epochs = min(len(c) for curves, _ in scored for c in curves)
    out = []
    for e in range(epochs):
        rhos, survived, losses = [], [], []
        for curves, fin in scored:
            rho, ok, loss = group_agreement([c[e] for c in curves], fin)
            rhos.append(rho)
            survived.append(ok)
            losses.append(loss)
        out.append(EpochAgreement(e + 1, float(np.mean(rhos)), float(np.mean(survived)), float(np.mean(losses)),
                                  len(scored), tuple(rhos)))
    return out


def halving_cost(epochs: int, cut_after: int, candidates: int) -> float:
    """The share of ``candidates * epochs`` training epochs that one halving costs: every
    candidate trains ``cut_after`` epochs, the top ``ceil(candidates / 2)`` the rest."""
    if not 1 <= cut_after <= epochs or candidates < 1:
        raise BadInput(f"a cut after epoch {cut_after} of {epochs} with {candidates} candidates: give 1 <= cut <= "
                       "epochs and at least one candidate")
    kept = math.ceil(candidates / 2)
    return (candidates * cut_after + kept * (epochs - cut_after)) / (candidates * epochs)

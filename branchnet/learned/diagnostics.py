"""Leave-one-tree-out diagnostics of a learned sharing cost: does it predict trees it has not seen?

For every distinct tree the model was fitted on, the posterior is recomputed without that
tree's networks (all its seeds), at the full fit's scales (refitting the scales for every
left-out tree would cost more and changes little; the scales are a handful of numbers chosen
from all trees), and each of its networks is predicted at its own seed with the interval of a
new measurement (:meth:`~branchnet.learned.model.SharingModel.predict_delta` with
``noise=True``). From those predictions (:func:`leave_one_tree_out`), :func:`summarize`
reports:

* the Spearman correlation of predicted against measured Δ_MTL over the networks, and over the
  trees' means; within each budget window, over the trees of the window (the ranking the
  recommendation relies on; the goal is >= 0.5), where a window holds at least 3 trees;
* the calibration of the intervals: the share of measured values inside the central 50 %, 80 %
  and 95 % predictive intervals (Δ_MTL, and every task's change pooled);
* the root mean square error of Δ_MTL and of each task's change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from branchnet.learned.model import SharingModel

#: Central interval levels whose coverage is reported.
LEVELS = (0.5, 0.8, 0.95)


def leave_one_tree_out(model: SharingModel) -> list[dict[str, Any]]:
    """One entry per observation of ``model``: ``tree_id, seed, params, measured, predicted,
    sd`` (Δ_MTL, percent) and ``tasks`` (task -> ``measured, predicted, sd``), each predicted by
    the model fitted without that tree."""
    observations = model.observations
    out: list[dict[str, Any]] = []
    for tree in dict.fromkeys(o.tree_id for o in observations):
        twin = model.without([o.tree_id != tree for o in observations])
        for o in observations:
            if o.tree_id != tree:
                continue
            mean, sd = twin.predict_delta([o.partitions], seed=o.seed, noise=True)
            task_mean, task_sd = twin.predict_tasks([o.partitions], seed=o.seed, noise=True)
            out.append({"tree_id": o.tree_id, "seed": o.seed, "params": o.params, "measured": o.delta_mtl,
                        "predicted": float(mean[0]), "sd": float(sd[0]),
                        "tasks": {t: {"measured": float(o.per_task[t]), "predicted": float(task_mean[0, i]),
                                      "sd": float(task_sd[0, i])} for i, t in enumerate(model.tasks)}})
    return out


def coverage(measured: Sequence[float], predicted: Sequence[float], sd: Sequence[float],
             levels: Sequence[float] = LEVELS) -> dict[str, float | None]:
    """The share of ``measured`` inside each central normal interval ``predicted ± z sd``."""
    m, p, s = (np.asarray(x, dtype=np.float64) for x in (measured, predicted, sd))
    if not len(m):
        return {f"{level:.2f}": None for level in levels}
    return {f"{level:.2f}": float(np.mean(np.abs(m - p) <= stats.norm.ppf(0.5 + level / 2) * s))
            for level in levels}


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)


def summarize(entries: Sequence[Mapping[str, Any]], windows: Mapping[int, tuple[float, float]],
              tasks: Sequence[str]) -> dict[str, Any]:
    """The diagnostics of leave-one-tree-out ``entries`` (see the module docstring).

    ``windows`` maps each budget to its params window; a Spearman needs at least 3 values
    (None otherwise). Every number is finite or None.
    """
    measured = [e["measured"] for e in entries]
    predicted = [e["predicted"] for e in entries]
    by_tree: dict[str, dict[str, Any]] = {}
    for e in entries:
        tree = by_tree.setdefault(e["tree_id"], {"params": e["params"], "measured": [], "predicted": []})
        tree["measured"].append(e["measured"])
        tree["predicted"].append(e["predicted"])
    means = {t: (float(np.mean(v["measured"])), float(np.mean(v["predicted"]))) for t, v in by_tree.items()}
    within: dict[str, Any] = {}
    for budget, (low, high) in windows.items():
        inside = [t for t, v in by_tree.items() if v["params"] is not None
                  and low * (1 - 1e-9) <= float(v["params"]) <= high * (1 + 1e-9)]
        within[str(budget)] = {"trees": len(inside),
                               "spearman": _spearman([means[t][1] for t in inside], [means[t][0] for t in inside])}
    task_measured = [e["tasks"][t]["measured"] for e in entries for t in tasks]
    task_predicted = [e["tasks"][t]["predicted"] for e in entries for t in tasks]
    task_sd = [e["tasks"][t]["sd"] for e in entries for t in tasks]
    rmse_tasks = {t: float(np.sqrt(np.mean([(e["tasks"][t]["measured"] - e["tasks"][t]["predicted"]) ** 2
                                            for e in entries]))) if entries else None for t in tasks}
    return {
        "networks": len(entries), "trees": len(by_tree),
        "spearman_networks": _spearman(predicted, measured),
        "spearman_trees": _spearman([v[1] for v in means.values()], [v[0] for v in means.values()]),
        "spearman_within_budget": within,
        "coverage_delta": coverage(measured, predicted, [e["sd"] for e in entries]),
        "coverage_tasks": coverage(task_measured, task_predicted, task_sd),
        "rmse_delta": float(np.sqrt(np.mean((np.asarray(measured) - np.asarray(predicted)) ** 2))) if entries else None,
        "rmse_tasks": rmse_tasks,
    }

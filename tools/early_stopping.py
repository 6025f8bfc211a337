"""Early stopping, measured on a study: would successive halving keep the best trees?

Reads a run whose ``branchnet evaluate`` study is trained: every network's ``history.csv``
(validation metrics after each epoch) and ``trees.csv`` (final test Δ_MTL). For each budget and
seed, the trees of the budget (random trees and the measures' trees) compete; per epoch e it
prints the mean Spearman ρ between the validation Δ_MTL after epoch e and the final test Δ_MTL,
how often the final best tree survives a cut to the top half after epoch e, the mean loss of
that cut (final best minus the best kept, points of Δ_MTL), and what the cut would cost (share
of the training epochs). The last epoch's row is the ceiling: validation against test on fully
trained networks. :mod:`branchnet.study.early` defines every number.

Usage::

    python tools/early_stopping.py --config configs/scenes-evaluate.yaml --runs R
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from branchnet.config import load_config
    from branchnet.data import build_tasks
    from branchnet.runs import HISTORY_FILE, STUDY_NETS_DIR, TREES_FILE, evaluate_dir, find_baselines
    from branchnet.study.early import halving_cost, rank_agreement
    from branchnet.study.table import read_trees_csv
    from branchnet.tasks import multi_task_delta

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--runs", required=True)
    args = parser.parse_args()
    config = load_config(args.config)
    runs = Path(args.runs)
    tasks = build_tasks(config)
    names = [t.name for t in tasks]
    baselines = find_baselines(config, runs, names)
    base = {t: b["val"][t] for t, b in baselines.metrics.items()}
    rows = read_trees_csv(evaluate_dir(runs) / TREES_FILE)

    early: dict[str, dict[int, list[float]]] = {}
    final: dict[str, dict[int, float]] = {}
    groups: dict[str, set[str]] = {}
    for row in rows:
        tree, seed = row["tree_id"], int(row["seed"])
        if row["budget"] is None or row["delta_mtl_test"] is None:
            continue
        groups.setdefault(f"{row['budget'] / 1e6:.2f}M", set()).add(tree)
        if seed in early.get(tree, {}):
            continue
        history = evaluate_dir(runs) / STUDY_NETS_DIR / tree / f"seed{seed}" / HISTORY_FILE
        with open(history, newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
        curve = []
        for record in records:
            metrics = {t.name: {t.main_metric: float(record[f"val/{t.name}/{t.main_metric}"])} for t in tasks}
            curve.append(float(multi_task_delta(metrics, base, tasks)["delta_mtl"]))
        early.setdefault(tree, {})[seed] = curve
        final.setdefault(tree, {})[seed] = float(row["delta_mtl_test"])

    epochs = min(len(c) for per in early.values() for c in per.values())
    load = os.getloadavg()[0]
    print(f"# early stopping on {runs} ({len(rows)} rows, {sum(len(v) for v in early.values())} networks, "
          f"{epochs} epochs; load average {load:.1f})\n")
    print("Groups: one budget's trees at one seed. ρ: mean Spearman of validation Δ_MTL after epoch e against "
          "final test Δ_MTL; survives: the final best tree is in the top half after epoch e; loss: final best "
          "minus the best kept (points); cost: share of the training epochs a cut after e takes.\n")
    print("| budget | trees | epoch e | groups | ρ (mean) | ρ per group | survives | loss | cost of a cut |")
    print("|---|---|---|---|---|---|---|---|---|")
    selections = {name: sorted(trees) for name, trees in sorted(groups.items())}
    for name, trees in [*selections.items(), ("all", None)]:
        chosen = selections if trees is None else {name: trees}
        size = int(np.mean([len(t) for t in chosen.values()]))
        for a in rank_agreement(early, final, chosen):
            cost = halving_cost(epochs, a.epoch, size)
            print(f"| {name} | {size} | {a.epoch} | {a.groups} | {a.spearman:+.2f} | "
                  f"{' '.join(f'{r:+.2f}' for r in a.per_group)} | {a.survival:.0%} | {a.loss:.2f} | {cost:.0%} |")


if __name__ == "__main__":
    main()

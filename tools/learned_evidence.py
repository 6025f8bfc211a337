"""Evidence for docs/evaluate.md, "The learned tree": can any method rank the trees of a budget
on this data, and does the learned model's form fit it?

Reads a run whose ``branchnet evaluate`` study is trained (``R/evaluate/nets``, seeds 0..S-1) and
prints, per budget of the study:

* **The noise floor**: how well one seed's ranking of the budget's trees (test Δ_MTL) predicts
  another seed's: the mean Spearman over pairs of seeds. No method can rank trees better than
  the data ranks them against themselves; near 0, every tree is as good as a random one.
* **The model's form on many networks**: the learned model fitted to the study's networks of
  every seed but one (their validation metrics, the prior of the run's affinity files) ranks
  the budget's trees by posterior mean; the Spearman with the held-out seed's test Δ_MTL, and
  the held-out seed's test Δ_MTL of the model's best tree minus the budget's random trees'.
* **Leave one tree out** over all the study's networks (validation), as ``branchnet search``
  reports it for its own.

This fits to networks of the seeds ``evaluate`` judges on, which ``branchnet search`` never
does: it is evidence about the data and the model's form, not a study result.

Usage::

    python tools/learned_evidence.py --config configs/scenes-evaluate.yaml --runs R
"""

from __future__ import annotations

import argparse
import os
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from branchnet.config import load_config
    from branchnet.learned import SharingModel
    from branchnet.learned.diagnostics import leave_one_tree_out, summarize
    from branchnet.runs import TREES_FILE, affinity_path, evaluate_dir
    from branchnet.steps.search import PRIOR_MEASURES, collect_observations
    from branchnet.study.table import read_trees_csv
    from branchnet.affinity import load_affinity
    from branchnet.study.jobs import align_affinity

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--runs", required=True)
    args = parser.parse_args()
    config = load_config(args.config)
    runs = Path(args.runs)
    rows = read_trees_csv(evaluate_dir(runs) / TREES_FILE)
    seeds = sorted({int(r["seed"]) for r in rows})
    budgets = sorted({int(r["budget"]) for r in rows if r["budget"] is not None})
    test = {(r["tree_id"], int(r["seed"])): float(r["delta_mtl_test"]) for r in rows}
    params = {r["tree_id"]: float(r["params"]) for r in rows}
    random = {b: sorted({r["tree_id"] for r in rows if r["source"] == "random" and r["budget"] == b}) for b in budgets}
    names = config.task_names
    measures = {}
    for m in PRIOR_MEASURES:
        path = affinity_path(runs, m)
        if path.is_file():
            data = align_affinity(load_affinity(path), names, 4, str(path))
            measures[m] = data.affinity
            locations = data.locations
    observations, notes = collect_observations(config, runs, seeds=seeds, places=("evaluate",))
    print(f"# learned_evidence: {config.name}, {len(observations)} networks of seeds {seeds}, "
          f"prior {', '.join(measures)}; load average {os.getloadavg()[0]:.1f}\n")
    print("| budget | trees in window | seed-to-seed Spearman (noise floor) | model fitted on the other seeds: "
          "Spearman with the held-out seed | its best tree minus random (held-out seed) |")
    print("|---|---|---|---|---|")
    for b in budgets:
        window = [t for t in params if 0.9 * b * (1 - 1e-9) <= params[t] <= b * (1 + 1e-9)]
        floor = [stats.spearmanr([test[(t, a)] for t in window], [test[(t, c)] for t in window]).statistic
                 for a, c in combinations(seeds, 2)]
        held_rho, gains = [], []
        for held in seeds:
            model = SharingModel(names, locations, measures)
            model.fit([o for o in observations if o.seed != held])
            trees = {o.tree_id: o.partitions for o in observations if o.tree_id in window}
            ids = sorted(trees)
            mean, _ = model.predict_delta([trees[t] for t in ids])
            held_rho.append(stats.spearmanr(mean, [test[(t, held)] for t in ids]).statistic)
            best = ids[int(np.argmax(mean))]
            gains.append(test[(best, held)] - np.mean([test[(t, held)] for t in random[b]]))
        print(f"| {b / 1e6:.2f}M | {len(window)} | {np.nanmean(floor):+.2f} ({', '.join(f'{x:+.2f}' for x in floor)}) | "
              f"{np.nanmean(held_rho):+.2f} ({', '.join(f'{x:+.2f}' for x in held_rho)}) | "
              f"{np.mean(gains):+.2f} ({', '.join(f'{x:+.2f}' for x in gains)}) |")
    model = SharingModel(names, locations, measures).fit(observations)
    entries = leave_one_tree_out(model)
    summary = summarize(entries, {b: (0.9 * b, float(b)) for b in budgets}, names)
    within = {k: v["spearman"] for k, v in summary["spearman_within_budget"].items()}
    print(f"\nLeave one tree out over all {summary['networks']} networks (validation): Spearman "
          f"{summary['spearman_networks']:+.2f} over networks, {summary['spearman_trees']:+.2f} over tree means; "
          f"within budgets {within}; 95 % interval coverage {summary['coverage_delta']['0.95']:.0%}; "
          f"RMSE {summary['rmse_delta']:.2f}; fitted noise sd per task "
          + ", ".join(f"{t} {v:.2f}" for t, v in model.noise.items())
          + "; alpha " + ", ".join(f"{m} {v:+.2f}" for m, v in model.coefficients()["mean"]["alpha"].items()))
    if notes:
        print(f"\n{len(notes)} network(s) left out: " + "; ".join(notes[:5]))


if __name__ == "__main__":
    main()

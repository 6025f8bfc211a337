"""Benchmark of the tree populations and cost alternatives (prints its figures; docs/tree.md quotes them).

* exact search time per cost form (``max``, the paper's; ``mean``; ``weighted``) for
  N = 6, 8, 10 at D = 4 on bench_tree's structured instances (``sensitivity`` is the ``max``
  form over reweighted distances: the ``max`` column);
* the number of trees (all, and branching in the last 3 stages only) for N = 3..8;
* the time to draw and price K = 8 random trees of a budget window for N = 4, 10, 40, and
  the number of trees in that window.

Usage::

    python tools/bench_tree_populations.py [--instances 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tree import RESNET50_STAGES, random_affinity, random_problem  # noqa: E402

from branchnet.affinity import AffinityData  # noqa: E402
from branchnet.tree.sampling import count_trees, random_trees  # noqa: E402
from branchnet.tree.search.exact import exact_search  # noqa: E402
from branchnet.tree.search.problem import Problem  # noqa: E402


def cost_forms(instances: int) -> None:
    print("exact search time (s, median / max) per cost form, D = 4, structured instances")
    print("| N | max | mean | weighted |")
    print("|---:|---:|---:|---:|")
    for n in (6, 8, 10):
        cells = []
        for form in ("max", "mean", "weighted"):
            times = []
            for i in range(instances):
                base = random_problem(np.random.default_rng(1000 * n + i), n, "structured")
                problem = Problem(base.dist, base.stage_params, base.head_params, max_params=base.max_params,
                                  form=form)
                start = time.perf_counter()
                exact_search(problem)
                times.append(time.perf_counter() - start)
            cells.append(f"{statistics.median(times):.2f} / {max(times):.2f}")
        print(f"| {n} | " + " | ".join(cells) + " |")


def affinity_data(n: int, rng: np.random.Generator) -> AffinityData:
    return AffinityData(random_affinity(rng, n, "structured"), [f"t{i}" for i in range(n)],
                        [f"layer{d + 1}" for d in range(4)], stage_params=(RESNET50_STAGES * 1e6).astype(np.int64),
                        head_params=np.full(n, 1_000_000)).validate()


def counts() -> None:
    print("\nnumber of trees, D = 4 (all; branching in the last 3 stages only)")
    print("| N | all | last 3 stages |")
    print("|---:|---:|---:|")
    for n in range(3, 9):
        data = affinity_data(n, np.random.default_rng(n))
        print(f"| {n} | {count_trees(data):,} | {count_trees(data, branch_stages=3):,} |")


def sampling() -> None:
    print("\nK = 8 random trees of the window [0.9 B, B], B halfway between all-shared and all-separate")
    print("| N | trees in the window | seconds |")
    print("|---:|---:|---:|")
    for n in (4, 10, 40):
        data = affinity_data(n, np.random.default_rng(n))
        stages = float(RESNET50_STAGES.sum() * 1e6)
        heads = float(data.head_params.sum())
        budget = heads + stages * (1 + n) / 2
        start = time.perf_counter()
        population = random_trees(data, budget, 8, seed=0)
        seconds = time.perf_counter() - start
        total = population.total
        shown = f"{total:,}" if total < 10**12 else f"{float(total):.2e}"
        print(f"| {n} | {shown} | {seconds:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=3)
    args = parser.parse_args()
    cost_forms(args.instances)
    counts()
    sampling()


if __name__ == "__main__":
    main()

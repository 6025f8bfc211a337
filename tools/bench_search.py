"""Benchmark: the search loop of ``branchnet search`` against a synthetic oracle, and its own cost.

Two parts, each printed as a table with the load average:

1. **Does the loop find the best tree?** For every generator family of
   :mod:`branchnet.learned.oracle` (hidden pairwise structures the model was not written for),
   several hidden truths (keys), task counts and stage shapes, two noise levels (per-task sd
   1.0 and 2.5 points; on the scenes study the residual noise of a network's Δ_MTL is about 1
   point, that of one task's change about 2.5) and a prior affinity that is informative or
   unrelated: each acquisition (Thompson sampling, expected improvement, random proposals
   with the same model) runs 4 N networks, and a user without the model trains as many random
   trees and keeps the best measured. Columns: the share of (truth, budget) cases whose best
   tree was trained (*found*) and recommended (*recommended*), and the mean regret of the
   recommended tree (its expected Δ_MTL below the best tree's, as a share of the best minus
   the window's mean: 0 is the best tree, 1 a typical tree of the window).
2. **The loop's own work** (refit and propose, per proposal) at the study's sizes (5 and 6 tasks,
   4 stages, 4 N networks, rounds of 2), against the training of one network of
   ``configs/scenes-evaluate.yaml`` measured in the same run (``--train`` to train it; else the
   figure of ``--network-seconds``). The goal is under 1 %.

Usage::

    python tools/bench_search.py [--keys 3] [--quick | --overhead-only] [--train] [--network-seconds 57]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from branchnet.learned import SearchSpace, SharingModel, run_loop  # noqa: E402
from branchnet.learned.oracle import FAMILIES, SharingOracle  # noqa: E402
from branchnet.study.jobs import tree_id  # noqa: E402
from branchnet.tree.sampling import TreeSpace  # noqa: E402

#: The scenes study's stages (resnet18 x0.25, params per stage) and heads, and multimnist's.
SCENES = ([26848, 33088, 131712, 525568], [37060, 36961, 37027, 36961, 36961])


def load() -> float:
    return os.getloadavg()[0]


def space_of(n: int, d: int, key: int) -> SearchSpace:
    """The scenes study's costs for 5 tasks and 4 stages; otherwise stages growing with depth."""
    if (n, d) == (5, 4):
        stage, heads = SCENES
    else:
        rng = np.random.default_rng(1000 + key)
        stage = np.sort(rng.integers(10, 100, d)) * 1000 * np.array([1, 1, 2, 4, 8][:d])
        heads = rng.integers(1, 5, n) * 1000
    return SearchSpace([f"t{i}" for i in range(n)], [f"s{j}" for j in range(d)], stage, heads)


def budgets_of(space: SearchSpace) -> list[int]:
    """Three budgets evenly spaced between the ends (as ``--sweep 3``), whose windows hold trees."""
    out = [int(round(space.low + (space.high - space.low) * i / 4)) for i in (1, 2, 3)]
    return [b for b in out if TreeSpace(space.tasks, space.stage_params, space.head_params, space.window(b)).size > 1]


def oracle_table(keys: int, shapes: list[tuple[int, int]], noises: list[float], priors: list[str]) -> None:
    methods = ("thompson", "ei", "random")
    print(f"\n## 1. The loop against a synthetic oracle (load average {load():.1f} at start)\n")
    print("| tasks x stages | noise | prior | method | cases | found | recommended | regret |")
    print("|---|---|---|---|---|---|---|---|")
    for n, d in shapes:
        for noise in noises:
            for prior in priors:
                stats = {m: [] for m in (*methods, "best measured of random")}
                for family in FAMILIES:
                    for key in range(keys):
                        space = space_of(n, d, key)
                        oracle = SharingOracle.generate(space, family, key, noise=noise)
                        budgets = budgets_of(space)
                        truth = {}
                        for b in budgets:
                            window = TreeSpace(space.tasks, space.stage_params, space.head_params,
                                               space.window(b)).all()
                            values = oracle.value(window)
                            truth[b] = (float(values.max()), float(values.mean()),
                                        tree_id(window[int(np.argmax(values))], space.tasks), window)
                        networks = 4 * n
                        for method in methods:
                            result = run_loop(SharingModel(space.tasks, space.locations, oracle.prior(prior, key)),
                                              space, budgets, networks, oracle.train, seeds=[100, 101],
                                              acquisition=method, batch=2, key=key)
                            for b in budgets:
                                best, mean, best_id, _ = truth[b]
                                got = float(oracle.value([result.recommended[b]])[0])
                                stats[method].append((any(p.tree_id == best_id for p in result.proposals),
                                                      tree_id(result.recommended[b], space.tasks) == best_id,
                                                      (best - got) / (best - mean)))
                        rng = np.random.default_rng(key)
                        for b in budgets:
                            best, mean, best_id, window = truth[b]
                            drawn = [window[int(r)] for r in rng.integers(0, len(window), networks // len(budgets))]
                            measured = [np.mean(list(oracle.measure(t, 100 + k % 2).values()))
                                        for k, t in enumerate(drawn)]
                            pick = drawn[int(np.argmax(measured))]
                            stats["best measured of random"].append(
                                (any(tree_id(t, space.tasks) == best_id for t in drawn),
                                 tree_id(pick, space.tasks) == best_id,
                                 (best - float(oracle.value([pick])[0])) / (best - mean)))
                for method, rows in stats.items():
                    arr = np.array(rows, dtype=np.float64)
                    print(f"| {n} x {d} | {noise:g} | {prior} | {method} | {len(rows)} | {arr[:, 0].mean():.0%} | "
                          f"{arr[:, 1].mean():.0%} | {arr[:, 2].mean():.3f} |", flush=True)


def overhead_table(network_seconds: float, source: str) -> None:
    print(f"\n## 2. The loop's own work per proposal (load average {load():.1f} at start)\n")
    print(f"One network of the scenes study trains in {network_seconds:.1f} s ({source}).\n")
    print("| tasks x stages | networks | rounds | seconds per proposal (mean) | max | share of one network |")
    print("|---|---|---|---|---|---|")
    for n, d in ((5, 4), (6, 4)):
        space = space_of(n, d, 0)
        oracle = SharingOracle.generate(space, "pairwise", 0, noise=2.5)
        result = run_loop(SharingModel(space.tasks, space.locations, oracle.prior("informative")), space,
                          budgets_of(space), 4 * n, oracle.train, seeds=[100, 101], batch=2, key=0)
        per = np.array(result.overhead) / 2
        print(f"| {n} x {d} | {4 * n} | {len(per)} | {per.mean():.3f} | {per.max():.3f} | "
              f"{per.mean() / network_seconds:.2%} |", flush=True)


def train_one() -> float:
    """Seconds to train one network of configs/scenes-evaluate.yaml (a 2-2-2-2 tree) on this CPU."""
    import tempfile

    import torch

    from branchnet.config import load_config
    from branchnet.data import build_dataset, build_tasks
    from branchnet.nn import BranchedNet
    from branchnet.train.engine import fit

    torch.set_num_threads(1)
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "scenes-evaluate.yaml")
    tasks = build_tasks(config)
    names = config.task_names
    partitions = [[names[:3], names[3:]]] * 4
    splits = {s: build_dataset(config, s) for s in ("train", "val", "test")}
    torch.manual_seed(0)
    model = BranchedNet(tasks, partitions, config.model, config.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit(model, tasks, config, Path(tmp), splits["train"], splits["val"], splits["test"], quiet=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=3, help="hidden truths per family and shape")
    parser.add_argument("--quick", action="store_true", help="one shape, one noise, one prior, 2 keys")
    parser.add_argument("--overhead-only", action="store_true", help="only part 2, the loop's own work")
    parser.add_argument("--train", action="store_true", help="train one scenes-evaluate network as the baseline")
    parser.add_argument("--network-seconds", type=float, default=57.0,
                        help="seconds per scenes-evaluate network when --train is not given (docs/evaluate.md)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"# bench_search: {os.cpu_count()} CPU cores, load average {load():.1f} at start")
    started = time.perf_counter()
    if args.overhead_only:
        pass
    elif args.quick:
        oracle_table(2, [(5, 4)], [2.5], ["informative"])
    else:
        oracle_table(args.keys, [(4, 3), (5, 4), (6, 4)], [1.0, 2.5], ["informative", "none"])
    seconds, source = args.network_seconds, "--network-seconds, measured by the scenes study"
    if args.train:
        seconds, source = train_one(), "trained in this run, one thread"
    overhead_table(seconds, source)
    print(f"\nwall time {time.perf_counter() - started:.0f} s, load average {load():.1f} at the end")


if __name__ == "__main__":
    main()

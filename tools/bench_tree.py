"""Benchmark of the tree search (prints its figures; docs/tree.md quotes them).

* exact search time for N = 3..12 tasks at D = 4, next to the number of nested
  partition chains a brute-force search would score and its time extrapolated from a
  measured brute-force rate (the baseline ratio);
* scalable search time for N = 20, 30, 40 and its dissimilarity against the
  complete-linkage baseline on the same instances;
* the scalable search's hit rate and worst gap against the exact optimum for N <= 10.

Instances: random affinities of two kinds ("structured": tasks from latent factors with
affinity falling with depth, like the paper's Fig. 4; "uniform": i.i.d. symmetric
entries), ResNet-50-like stage params, random heads, budget uniform between the
all-shared and the all-separate network. Usage::

    python tools/bench_tree.py [--instances 200] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from branchnet.tree.search.exact import exact_search  # noqa: E402
from branchnet.tree.search.linkage import linkage_baseline  # noqa: E402
from branchnet.tree.search.problem import Problem  # noqa: E402
from branchnet.tree.search.scalable import scalable_search  # noqa: E402

#: Params of ResNet-50's stem+layer1, layer2, layer3, layer4 (in millions).
RESNET50_STAGES = np.array([0.23, 1.22, 7.10, 14.96])
DEPTH = 4


def random_affinity(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """(D, N, N) symmetric affinity with unit diagonal."""
    if kind == "uniform":
        a = rng.uniform(-1, 1, size=(DEPTH, n, n))
        a = (a + a.transpose(0, 2, 1)) / 2
    else:  # tasks share latent factors; features diverge and affinity drops with depth
        z = rng.normal(size=(n, 3))
        a = np.empty((DEPTH, n, n))
        for d in range(DEPTH):
            a[d] = np.corrcoef(z + rng.normal(size=(n, 3)) * (0.3 + 0.5 * d)) * (1 - 0.15 * d)
    for d in range(DEPTH):
        np.fill_diagonal(a[d], 1.0)
    return a


def random_problem(rng: np.random.Generator, n: int, kind: str) -> Problem:
    heads = rng.uniform(0.5, 2.5, size=n)
    lo = RESNET50_STAGES.sum() + heads.sum()
    hi = n * RESNET50_STAGES.sum() + heads.sum()
    return Problem(1.0 - random_affinity(rng, n, kind), RESNET50_STAGES, float(heads.sum()),
                   max_params=float(lo + rng.uniform() * (hi - lo)))


def chain_count(n: int, depth: int) -> int:
    """Number of chains of ``depth`` nested partitions of an n-set (trees a brute force scores)."""
    counts = [1] * (n + 1)  # depth 0: one way for any set
    for _ in range(depth):
        nxt = [1] + [0] * n
        for m in range(1, n + 1):  # the block holding the first element has size s
            nxt[m] = sum(math.comb(m - 1, s - 1) * counts[s] * nxt[m - s] for s in range(1, m + 1))
        counts = nxt
    return counts[n]


def brute_force_rate(rng: np.random.Generator, n: int = 5) -> float:
    """Chains scored per second by a straightforward enumeration (the baseline)."""
    problem = random_problem(rng, n, "uniform")

    def partitions(items):
        if not items:
            yield []
            return
        for p in partitions(items[1:]):
            yield [[items[0]]] + p
            for i in range(len(p)):
                yield p[:i] + [[items[0]] + p[i]] + p[i + 1:]

    def chains(prev, d):
        if d == DEPTH:
            yield []
            return
        options = partitions(list(range(n))) if prev is None else (
            [g for part in combo for g in part] for combo in itertools.product(*[list(partitions(g)) for g in prev]))
        for p in options:
            for tail in chains(p, d + 1):
                yield [p] + tail

    start, count, best = time.perf_counter(), 0, math.inf
    for chain in chains(None, 0):
        labels = np.zeros((DEPTH, n), dtype=np.int64)
        for d, p in enumerate(chain):
            for j, g in enumerate(p):
                labels[d, g] = j
        counts = np.array([len(p) for p in chain])
        if problem.fits(counts):
            best = min(best, problem.dissimilarity(labels))
        count += 1
    return count / (time.perf_counter() - start)


def bench_exact(rng: np.random.Generator, sizes: list[int], repeats: int) -> None:
    rate = brute_force_rate(rng)
    print(f"brute force (baseline): {rate:,.0f} chains/s measured at N=5, D={DEPTH}")
    print(f"{'N':>3} {'median s':>9} {'max s':>7} {'chains':>22} {'brute force (est.)':>20} {'speed-up':>10}")
    for n in sizes:
        times = []
        for i in range(repeats):
            problem = random_problem(rng, n, "structured" if i % 2 == 0 else "uniform")
            start = time.perf_counter()
            exact_search(problem)
            times.append(time.perf_counter() - start)
        chains = chain_count(n, DEPTH)
        brute = chains / rate
        median = statistics.median(times)
        print(f"{n:>3} {median:>9.2f} {max(times):>7.2f} {chains:>22,} {_duration(brute):>20} {brute / median:>10.3g}")
        sys.stdout.flush()


def _duration(seconds: float) -> str:
    for unit, size in (("years", 3.15e7), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def bench_scalable(rng: np.random.Generator, sizes: list[int], repeats: int) -> None:
    print(f"{'N':>3} {'kind':>10} {'median s':>9} {'max s':>7} {'dissimilarity':>14} {'baseline':>9} {'ratio':>6}")
    for n in sizes:
        for kind in ("structured", "uniform"):
            times, found, base = [], [], []
            for _ in range(repeats):
                problem = random_problem(rng, n, kind)
                start = time.perf_counter()
                labels = scalable_search(problem)
                times.append(time.perf_counter() - start)
                found.append(problem.dissimilarity(labels))
                base.append(problem.dissimilarity(linkage_baseline(problem)))
                assert found[-1] <= base[-1] + 1e-9, "scalable search lost to the baseline"
            print(f"{n:>3} {kind:>10} {statistics.median(times):>9.2f} {max(times):>7.2f} "
                  f"{np.mean(found):>14.3f} {np.mean(base):>9.3f} {np.mean(found) / np.mean(base):>6.2f}")
            sys.stdout.flush()


def bench_quality(rng: np.random.Generator, instances: int, max_n: int = 10) -> None:
    print(f"{'kind':>10} {'instances':>9} {'hits':>5} {'hit rate':>8} {'worst gap':>10} {'worst rel.':>10} "
          f"{'mean gap':>9}")
    for kind in ("structured", "uniform"):
        hits, gaps, rels = 0, [], []
        for _ in range(instances):
            problem = random_problem(rng, int(rng.integers(3, max_n + 1)), kind)
            best = problem.dissimilarity(exact_search(problem))
            found = problem.dissimilarity(scalable_search(problem))
            gap = found - best
            assert gap > -1e-9, "the scalable search beat the exact one"
            hits += gap <= 1e-9
            gaps.append(max(gap, 0.0))
            rels.append(max(gap, 0.0) / best if best > 0 else 0.0)
        print(f"{kind:>10} {instances:>9} {hits:>5} {hits / instances:>8.1%} {max(gaps):>10.4f} "
              f"{max(rels):>10.1%} {np.mean(gaps):>9.4f}")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=200, help="random instances per kind for the hit rate")
    parser.add_argument("--repeats", type=int, default=3, help="instances per size for the timings")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["exact", "scalable", "quality"], help="run one part")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    exact_sizes = list(range(3, 8 if args.quick else 13))
    scalable_sizes = [12, 16] if args.quick else [20, 30, 40]
    instances = min(args.instances, 10) if args.quick else args.instances
    if args.only in (None, "exact"):
        print(f"== exact search, D={DEPTH}")
        bench_exact(rng, exact_sizes, args.repeats)
    if args.only in (None, "scalable"):
        print(f"== scalable search, D={DEPTH} (never worse than the complete-linkage baseline)")
        bench_scalable(rng, scalable_sizes, args.repeats)
    if args.only in (None, "quality"):
        print(f"== scalable vs exact, N = 3..10, D={DEPTH}")
        bench_quality(rng, instances)


if __name__ == "__main__":
    main()

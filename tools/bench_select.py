"""Benchmark: exact network selection (branch and bound) against the MILP, and plain Algorithm 1.

    PYTHONPATH=. python tools/bench_select.py [--quick] [--milp-limit SECONDS]

(a) the paper's setting: 5 tasks, 31 groups at full width (cost 1) + 5 half-width
    single-task networks (cost 0.5) = 36 candidates, budgets 1..5 step 0.5
    (Standley et al., Sec. 3.1 and 4.2). Goal: under 10 ms a solve.
(b) 10 tasks: all 1,023 groups + 10 half-width networks = 1,033 candidates, budgets
    1..10, solved exactly (the partition search). Goal: under 5 s a solve; the MILP
    (scipy/HiGHS) beside it, and both must agree.

(c) many candidates, every generator family of branchnet.selection.synthetic.FAMILIES
    (the project's own grid-cost tables and six it was not tuned on: costs proportional
    to the tasks served, independent of them, heavy-tailed, a few huge cheap networks,
    continuous costs with 3 decimals, a random subset of every size): 12 tasks, 10,000
    candidates, budget 3, solved exactly and by the MILP on the same table. Goal: every
    family under 10 s and never slower than the MILP; both must agree. --quick: 2,000
    candidates; --families picks some.

Losses come from branchnet.selection.synthetic.paper_like_table (groups a few percent
better or worse than their members alone) and family_table. Times are wall clock (CPU
time beside it), best of a few runs for (a), one run for (b) and (c); the exact times
include building the search's tables. Ratios are against the MILP measured in the same
run. The machine's load average (os.getloadavg: 1, 5, 15 minutes) is printed at the
start, on every row of (c) and at the end: on a shared machine the figures are only as
good as the load allows.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

from branchnet.selection import select_milp, select_networks
from branchnet.selection.synthetic import FAMILIES, family_table, paper_like_table


CPU: list[float] = []  # process CPU seconds of each timed call (less sensitive to a busy machine)


def timed(fn, repeats: int = 1):
    """Best wall-clock seconds over ``repeats`` calls, and the last result."""
    best, best_cpu, value = math.inf, math.inf, None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    CPU.append(best_cpu)
    return best, value


def plain_algorithm_1(losses: np.ndarray, costs: np.ndarray, budget: float) -> float:
    """Algorithm 1 as printed: FILTER, SORT by improvement, recurse; no bounds. Returns the best loss."""
    best = [math.inf]

    def recurse(cand: list[int], cur: np.ndarray, left: float) -> None:
        if np.isfinite(cur).all():
            best[0] = min(best[0], math.fsum(cur.tolist()))
        cand = [n for n in cand if costs[n] <= left + 1e-9 and (losses[n] < cur).any()]
        capped = np.where(np.isfinite(cur), cur, 10.0)
        cand.sort(key=lambda n: -np.maximum(capped - losses[n], 0).sum())
        for i, n in enumerate(cand):
            recurse(cand[i + 1:], np.minimum(cur, losses[n]), left - costs[n])

    recurse(list(range(len(costs))), np.full(losses.shape[1], np.inf), budget)
    return best[0]


def bench_paper(seeds: int) -> None:
    print("(a) 5 tasks, 36 candidates (31 groups + 5 half-width), budgets 1..5 step 0.5")
    budgets = np.arange(1.0, 5.01, 0.5)
    bb_times, milp_times, plain_times, bb_cpu = [], [], [], []
    for seed in range(seeds):
        table = paper_like_table(5, seed=seed)
        losses, costs = table.loss_matrix(), table.costs()
        for budget in budgets:
            t_bb, s = timed(lambda: select_networks(table, budget), repeats=3)
            bb_cpu.append(CPU[-1])
            t_milp, m = timed(lambda: select_milp(table, budget), repeats=1)
            t_plain, plain = timed(lambda: plain_algorithm_1(losses, costs, budget), repeats=1)
            assert abs(s.total_loss - m.total_loss) < 1e-6, (seed, budget)
            assert abs(s.total_loss - plain) < 1e-12, (seed, budget)
            bb_times.append(t_bb)
            milp_times.append(t_milp)
            plain_times.append(t_plain)
    n = len(bb_times)
    print(f"    {n} solves ({seeds} tables x {len(budgets)} budgets), all three agree")
    for name, times in (("branch and bound", bb_times), ("MILP (HiGHS)", milp_times),
                        ("plain Algorithm 1", plain_times)):
        print(f"    {name:18s} median {1e3 * statistics.median(times):8.2f} ms   max {1e3 * max(times):8.2f} ms")
    cpu_median, cpu_max = 1e3 * statistics.median(bb_cpu), 1e3 * max(bb_cpu)
    print(f"    branch and bound CPU time: median {cpu_median:.2f} ms, max {cpu_max:.2f} ms")
    ratio = statistics.median(milp_times) / statistics.median(bb_times)
    ratio_plain = statistics.median(plain_times) / statistics.median(bb_times)
    print(f"    median ratios: MILP / B&B = {ratio:.1f}x, plain Algorithm 1 / B&B = {ratio_plain:.1f}x")
    wall_max = 1e3 * max(bb_times)
    print(f"    goal < 10 ms a solve: wall {'met' if wall_max < 10 else 'NOT met'} (max {wall_max:.2f} ms), "
          f"CPU {'met' if cpu_max < 10 else 'NOT met'} (max {cpu_max:.2f} ms)")


def bench_ten(seeds: list[int], budgets: list[float]) -> None:
    print("(b) 10 tasks, 1,033 candidates (1,023 groups + 10 half-width), exact")
    print("    seed budget  exact s exact cpu  MILP s  total loss networks  agree")
    worst, rows = 0.0, []
    for seed in seeds:
        table = paper_like_table(10, seed=seed)
        for budget in budgets:
            t_bb, s = timed(lambda: select_networks(table, budget))
            cpu_bb = CPU[-1]
            t_milp, m = timed(lambda: select_milp(table, budget))
            agree = abs(s.total_loss - m.total_loss) <= 1e-6 and s.total_loss <= m.total_loss + 1e-12
            worst = max(worst, t_bb)
            rows.append((t_bb, t_milp, cpu_bb))
            print(f"    {seed:>4} {budget:>6g} {t_bb:8.2f} {cpu_bb:8.2f} {t_milp:8.2f} {s.total_loss:11.6f} "
                  f"{len(s.networks):>8}  {'yes' if agree else 'NO'}", flush=True)
            if not agree:
                print(f"    MISMATCH: exact {s.total_loss!r} vs MILP {m.total_loss!r}", file=sys.stderr)
    bb = [r[0] for r in rows]
    milp = [r[1] for r in rows]
    print(f"    exact search: median {statistics.median(bb):.2f} s, max {max(bb):.2f} s; "
          f"MILP: median {statistics.median(milp):.2f} s, max {max(milp):.2f} s")
    ratios = [r[1] / r[0] for r in rows]
    print(f"    MILP / exact time: median {statistics.median(ratios):.1f}x "
          f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x)")
    print(f"    goal < 5 s a solve: {'met' if worst < 5 else 'NOT met'} (max {worst:.2f} s)")


def load() -> str:
    """The load average (1, 5, 15 minutes) as text."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def bench_families(families: list[str], n_tasks: int, n_candidates: int, budget: float,
                   milp_limit: float) -> None:
    print(f"(c) {n_tasks} tasks, {n_candidates:,} candidates, budget {budget:g}, exact search and MILP on "
          f"each family's table (load average {load()})")
    print("    family          exact s  exact cpu    MILP s   MILP / exact  total loss networks  agree  load average")
    worst, slower = 0.0, []
    for family in families:
        table = family_table(family, n_tasks, n_candidates, seed=0)
        t_bb, s = timed(lambda: select_networks(table, budget))
        cpu_bb = CPU[-1]
        start = time.perf_counter()
        try:
            m = select_milp(table, budget, time_limit=milp_limit)
        except RuntimeError:
            m = None
        t_milp = time.perf_counter() - start
        if m is None:
            agree, ratio, milp_text = "n/a", f">= {t_milp / t_bb:.0f}x", f">{milp_limit:g}"
        else:
            ok = abs(s.total_loss - m.total_loss) <= 1e-6 and s.total_loss <= m.total_loss + 1e-12
            agree, ratio, milp_text = ("yes" if ok else "NO"), f"{t_milp / t_bb:.1f}x", f"{t_milp:.2f}"
            if not ok:
                print(f"    MISMATCH: exact {s.total_loss!r} vs MILP {m.total_loss!r}", file=sys.stderr)
        worst = max(worst, t_bb)
        if m is not None and t_bb > t_milp:
            slower.append(family)
        print(f"    {family:14s} {t_bb:8.2f} {cpu_bb:10.2f} {milp_text:>9} {ratio:>14} {s.total_loss:11.6f} "
              f"{len(s.networks):>8}  {agree:5s}  {load()}", flush=True)
    print(f"    goal every family < 10 s and not slower than the MILP: "
          f"{'met' if worst < 10 and not slower else 'NOT met'} (slowest {worst:.2f} s"
          + (f"; slower than the MILP on {', '.join(slower)}" if slower else "") + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tables and budgets, (c) at 2,000 candidates")
    parser.add_argument("--milp-limit", type=float, default=600.0,
                        help="seconds per MILP solve in (c); a MILP that hits it is reported as slower than that")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"families for (c), comma-separated (default: all of {', '.join(FAMILIES)})")
    parser.add_argument("--only", choices=("a", "b", "c"), action="append",
                        help="run only these parts (repeatable; default: all)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"load average {load()}")
    parts = args.only or ["a", "b", "c"]
    if "a" in parts:
        bench_paper(seeds=2 if args.quick else 5)
        print()
    if "b" in parts:
        if args.quick:
            bench_ten(seeds=[0], budgets=[3.0, 6.0])
        else:
            bench_ten(seeds=[0, 1], budgets=[float(b) for b in range(1, 11)])
        print()
    if "c" in parts:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            parser.error(f"unknown families {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
        bench_families(families, 12, 2_000 if args.quick else 10_000, 3.0, args.milp_limit)
    print(f"load average at the end {load()}")


if __name__ == "__main__":
    main()

"""Benchmark of RSA task affinity: branchnet's streaming path against the naive path,
rsatoolbox (when installed) and a bare float32 matrix product, the floor.

Synthetic features: K images, F values per image, N tasks, D locations (defaults: the
issue's K=500, F=65,536, N=5, D=4). Features of one (task, location) are generated a
batch at a time from a seed, so the benchmark itself never holds all N*D blocks:

    x[t, d, a] = L[a] @ W[t, d] + roll(P[j_a], s_a)

with L (K, 16) per-image latent factors shared by all tasks (so tasks are related), W[t, d]
(16, F) a mix of a per-location and a per-task matrix, and the noise a row j_a of a small
random pool P rolled by a random shift s_a (cheap to make; j_a, s_a drawn per (t, d, a)).
The time spent generating is measured inside the source and subtracted ("net" columns),
so the figures compare the computations, not the generator.

Each path runs in a fresh subprocess; its peak memory is the growth of the process's
resident set (VmHWM, reset through /proc/self/clear_refs where Linux allows it, else
ru_maxrss) over the resident set measured just before it starts, so it counts torch's
allocations too (tracemalloc would not).

Paths:
  floor        per (task, location): the block X (K, F) float32, then X @ X.T (numpy/BLAS
               syrk on the CPU with as many threads as cores are free, the best a bare
               product can do on a shared machine; torch.mm on a GPU, the block already
               there); only the product is timed.
  branchnet    branchnet.rsa.compute_affinity (default max_memory: the D blocks of a task
               are held, one pass over the source per task).
  branchnet-1  the same with max_memory = 1.25 blocks: one location per pass, the least memory.
  naive        per (task, location): 1 - np.corrcoef(X); then scipy.stats.spearmanr on the
               upper triangles for every pair of tasks at every location (the libraries'
               default threads, what plain numpy/scipy code gets).
  rsatoolbox   rsatoolbox.rdm.calc_rdm(method='correlation') per (task, location), then
               rsatoolbox.rdm.compare(method='spearman') per location.

With ``--load`` every path is measured twice per round: on the machine as it is, and while
a competing process keeps one core busy (a Python busy loop, started before the path and
stopped after it); both figures are printed side by side with the load averages.

Usage: python tools/bench_affinity.py [--images 500] [--features 65536] [--tasks 5]
       [--locations 4] [--device cpu|cuda] [--paths floor,branchnet,...] [--repeat 1] [--threads T]
       [--load]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RANK = 16
POOL = 61
PATHS = ["floor", "branchnet", "branchnet-1", "naive", "rsatoolbox"]


class SyntheticSource:
    """A :class:`branchnet.rsa.FeatureSource` that generates its features batch by batch."""

    def __init__(self, k: int, f: int, n: int, d: int, seed: int = 0, batch: int = 32):
        self.tasks = [f"task{t}" for t in range(n)]
        self.locations = [f"layer{i + 1}" for i in range(d)]
        self.num_images, self.f, self.seed, self.batch = k, f, seed, batch
        rng = np.random.default_rng([seed, 1])
        self.latent = rng.standard_normal((k, RANK), dtype=np.float32)
        self.pool = rng.standard_normal((POOL, f), dtype=np.float32)
        self.gen_seconds = 0.0

    def _weights(self, t: int, d: int) -> np.ndarray:
        shared = np.random.default_rng([self.seed, 2, d]).standard_normal((RANK, self.f), dtype=np.float32)
        own = np.random.default_rng([self.seed, 3, t, d]).standard_normal((RANK, self.f), dtype=np.float32)
        mix = 0.2 + 0.6 * t / max(1, len(self.tasks) - 1)  # tasks differ in how much they share
        return (mix * shared + (1 - mix) * own) * 0.5

    def block_rows(self, t: int, d: int, weights: np.ndarray, start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 4, t, d, start])
        rows = self.latent[start:stop] @ weights
        picks = rng.integers(0, POOL, stop - start)
        shifts = rng.integers(0, self.f, stop - start)
        for i, (j, s) in enumerate(zip(picks, shifts)):
            rows[i, : self.f - s] += self.pool[j, s:]
            rows[i, self.f - s:] += self.pool[j, :s]
        return rows

    def batches(self, task: str, locations):
        t = self.tasks.index(task)
        began = time.perf_counter()
        weights = [self._weights(t, d) for d in locations]
        self.gen_seconds += time.perf_counter() - began
        for start in range(0, self.num_images, self.batch):
            stop = min(start + self.batch, self.num_images)
            began = time.perf_counter()
            batch = [self.block_rows(t, d, w, start, stop) for d, w in zip(locations, weights)]
            self.gen_seconds += time.perf_counter() - began
            yield batch

    def block(self, t: int, d: int, out: np.ndarray | None = None) -> np.ndarray:
        """The whole (K, F) block of (task t, location d), into ``out`` if given."""
        out = np.empty((self.num_images, self.f), dtype=np.float32) if out is None else out
        start = 0
        for (rows,) in self.batches(self.tasks[t], [d]):
            out[start:start + len(rows)] = rows
            start += len(rows)
        return out


# ----------------------------------------------------------------------------------- memory

def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------------- paths

def run_floor(source: SyntheticSource, device: str) -> dict:
    import torch

    from branchnet.machine import free_cores, thread_limit

    block = np.empty((source.num_images, source.f), dtype=np.float32)
    product = 0.0
    threads = free_cores() if device == "cpu" else None
    with thread_limit(threads or torch.get_num_threads()):
        for t in range(len(source.tasks)):
            for d in range(len(source.locations)):
                source.block(t, d, block)
                if device == "cpu":
                    began = time.perf_counter()
                    g = block @ block.T
                else:
                    x = torch.from_numpy(block).to(device)
                    torch.cuda.synchronize()
                    began = time.perf_counter()
                    g = x @ x.T
                    torch.cuda.synchronize()
                    del x
                product += time.perf_counter() - began
                del g
    return {"product_seconds": product, "threads": threads}


def run_branchnet(source: SyntheticSource, device: str, one_block: bool) -> dict:
    import torch

    import branchnet.rsa.device as device_module
    import branchnet.rsa.rdm as rdm_module
    from branchnet.rsa import compute_affinity

    # Time the Gram products inside the path too: "net / products" is the path's overhead
    # over its own matrix products, measured under the same load.
    product = [0.0]

    def timed(gram):
        def timed_gram(z):
            if z.device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            out = gram(z)
            if z.device.type == "cuda":
                torch.cuda.synchronize()
            product[0] += time.perf_counter() - began
            return out
        return timed_gram

    rdm_module.gram = timed(rdm_module.gram)  # the numpy path
    device_module.gram = timed(device_module.gram)  # the torch path
    memory = int(1.25 * source.num_images * source.f * 4) if one_block else None
    result = compute_affinity(source, device=device, max_memory=memory, progress=False)
    return {"affinity": result.affinity.tolist(), "max_memory": result.settings["max_memory"],
            "inner_product_seconds": product[0], "threads": result.settings["threads"]}


def run_naive(source: SyntheticSource, device: str) -> dict:
    from scipy.stats import spearmanr

    n, d, k = len(source.tasks), len(source.locations), source.num_images
    rdms = np.empty((n, d, k, k))
    for t in range(n):
        for loc in range(d):
            rdms[t, loc] = 1.0 - np.corrcoef(source.block(t, loc))
    iu = np.triu_indices(k, 1)
    affinity = np.ones((d, n, n))
    for loc in range(d):
        for i in range(n):
            for j in range(i + 1, n):
                affinity[loc, i, j] = affinity[loc, j, i] = spearmanr(rdms[i, loc][iu], rdms[j, loc][iu]).statistic
    return {"affinity": affinity.tolist()}


def run_rsatoolbox(source: SyntheticSource, device: str) -> dict:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare, concat

    n, d = len(source.tasks), len(source.locations)
    per_location: list[list] = [[] for _ in range(d)]
    for t in range(n):
        for loc in range(d):
            per_location[loc].append(calc_rdm(Dataset(source.block(t, loc)), method="correlation"))
    affinity = np.stack([compare(concat(rdms), concat(rdms), method="spearman") for rdms in per_location])
    return {"affinity": affinity.tolist()}


def child(args: argparse.Namespace) -> None:
    """Run one path in this (fresh) process and print its figures as JSON."""
    import torch

    source = SyntheticSource(args.images, args.features, args.tasks, args.locations, args.seed)
    # Warm up BLAS / the GPU so that no path pays a one-off start-up inside its timing.
    warm = np.ones((64, args.features), dtype=np.float32)
    warm @ warm.T
    if args.device != "cpu":
        x = torch.ones((64, args.features), device=args.device)
        (x @ x.T).cpu()
        torch.cuda.synchronize()
    del warm
    # Imports are not part of any path's time.
    import scipy.stats  # noqa: F401

    if args.path.startswith("branchnet"):
        import branchnet.progress  # noqa: F401
        import branchnet.rsa  # noqa: F401
    if args.path == "rsatoolbox":
        import rsatoolbox.data  # noqa: F401
        import rsatoolbox.rdm  # noqa: F401
    exact_peak = _reset_peak()
    before = _rss()
    began = time.perf_counter()
    if args.path == "floor":
        extra = run_floor(source, args.device)
    elif args.path in ("branchnet", "branchnet-1"):
        extra = run_branchnet(source, args.device, one_block=args.path == "branchnet-1")
    elif args.path == "naive":
        extra = run_naive(source, args.device)
    elif args.path == "rsatoolbox":
        extra = run_rsatoolbox(source, args.device)
    else:
        raise SystemExit(f"unknown path {args.path}")
    seconds = time.perf_counter() - began
    peak = _peak() - before
    print(json.dumps(dict(extra, seconds=seconds, gen_seconds=source.gen_seconds, peak_bytes=peak,
                          exact_peak=exact_peak)))


def measure(args: argparse.Namespace, path: str) -> dict | None:
    command = [sys.executable, __file__, "--child", path, "--images", str(args.images), "--features",
               str(args.features), "--tasks", str(args.tasks), "--locations", str(args.locations),
               "--device", args.device, "--seed", str(args.seed)]
    env = dict(os.environ, BRANCHNET_QUIET="1")
    if args.threads:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(args.threads)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {path}: failed ({last})", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


class BusyCore:
    """A competing process that keeps one core busy while the block runs (``--load``)."""

    def __enter__(self) -> "BusyCore":
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # running before the path starts
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait()


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--features", type=int, default=65536)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--locations", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over all paths; each path's fastest run is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads of every path (default: the libraries' own choice)")
    parser.add_argument("--load", action="store_true",
                        help="measure every path also while a competing process keeps one core busy")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.path = args.child
        return child(args)

    paths = [p for p in args.paths.split(",") if p]
    if "rsatoolbox" in paths:
        try:
            import rsatoolbox  # noqa: F401
        except ImportError:
            print("rsatoolbox is not installed: skipping it (pip install rsatoolbox to include it)")
            paths.remove("rsatoolbox")
    k, f, n, d = args.images, args.features, args.tasks, args.locations
    block = k * f * 4
    print(f"K={k} images, F={f} values per image, N={n} tasks, D={d} locations, device={args.device}; "
          f"one (task, location) block = {block / 2**20:.0f} MiB float32, {n * d} blocks")
    print(f"machine: {os.cpu_count()} CPU cores, load average {load_average():.1f} at start; "
          f"threads per path: {args.threads or 'library default (floor, branchnet: the free cores)'}")
    conditions = ["as is", "one core busy"] if args.load else ["as is"]
    results: dict[str, dict[str, dict]] = {c: {} for c in conditions}
    loads: dict[str, list[float]] = {c: [] for c in conditions}
    for round_ in range(args.repeat):  # rounds interleave the paths, so that load changes hit them alike
        for path in paths:
            if round_ > 0 and path == "rsatoolbox":
                continue  # minutes per run and far behind: measured in the first round only
            for condition in conditions:
                busy = BusyCore() if condition == "one core busy" else contextlib.nullcontext()
                with busy:
                    loads[condition].append(load_average())
                    r = measure(args, path)
                if r is None:
                    continue
                r["net"] = r.get("product_seconds", r["seconds"] - r["gen_seconds"])
                print(f"  round {round_ + 1} {path} ({condition}): {r['net']:.2f} s net, "
                      f"peak +{r['peak_bytes'] / 2**20:.0f} MiB, threads {r.get('threads') or 'default'}", flush=True)
                best = results[condition].get(path)
                if best is None or r["net"] < best["net"]:
                    results[condition][path] = r

    for condition in conditions:
        table(results[condition], block, f"{condition} (load average {min(loads[condition]):.1f}-"
                                         f"{max(loads[condition]):.1f} when the paths started)")
    if args.load:
        print("\n| path | net s (as is) | net s (one core busy) | net / floor (as is) | net / floor (busy) | "
              "naive / net (as is) | naive / net (busy) |")
        print("|---|---|---|---|---|---|---|")
        quiet, loaded = results[conditions[0]], results[conditions[1]]
        for path in quiet:
            cells = []
            for key in ("net", "floor", "naive"):
                for res in (quiet, loaded):
                    r = res.get(path)
                    if r is None:
                        cells.append("-")
                    elif key == "net":
                        cells.append(f"{r['net']:.2f}")
                    elif key == "floor":
                        cells.append(f"{r['net'] / res['floor']['net']:.2f}" if "floor" in res else "-")
                    else:
                        cells.append(f"{res['naive']['net'] / r['net']:.1f}x" if "naive" in res else "-")
            print(f"| {path} | " + " | ".join(cells) + " |")


def table(results: dict[str, dict], block: int, title: str) -> None:
    floor = results.get("floor", {}).get("net")
    naive = results.get("naive", {}).get("net")
    reference = np.asarray(results["branchnet"]["affinity"]) if "branchnet" in results else None
    print()
    print(title)
    print("| path | total s | generating s | net s | net / floor | naive / net | products s | net / products | "
          "peak memory | peak / block | threads | max abs diff vs branchnet |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path, r in results.items():
        ratio_floor = f"{r['net'] / floor:.2f}" if floor else "-"
        speedup = f"{naive / r['net']:.1f}x" if naive else "-"
        inner = r.get("inner_product_seconds", r.get("product_seconds"))
        products = f"{inner:.2f}" if inner is not None else "-"
        ratio_inner = f"{r['net'] / inner:.2f}" if inner else "-"
        diff = "-"
        if reference is not None and "affinity" in r:
            diff = f"{np.abs(np.asarray(r['affinity']) - reference).max():.1e}"
        total = f"{r['seconds']:.2f}"
        print(f"| {path} | {total} | {r['gen_seconds']:.2f} | {r['net']:.2f} | {ratio_floor} | {speedup} | "
              f"{products} | {ratio_inner} | {r['peak_bytes'] / 2**20:.0f} MiB | {r['peak_bytes'] / block:.2f} | "
              f"{r.get('threads') or 'default'} | {diff} |")
    print()
    print("net = total - time spent generating features (floor: the matrix products alone); products = time in "
          "the K x K Gram products inside the path; peak = growth of the resident set over the path"
          + ("" if all(r["exact_peak"] for r in results.values()) else " (upper bound: peak reset unavailable)"))


if __name__ == "__main__":
    main()

"""Benchmark: networks per hour of ``branchnet evaluate --jobs 1`` against ``--jobs N`` (default 2),
measured in the same run on the same networks.

The networks are those of the scenes study (``configs/scenes-evaluate.yaml``: the five scenes
tasks at 48 x 48, resnet18 x0.25 at output stride 8, batch 32), trained on fewer images and
epochs so that the whole run takes a couple of minutes (``--images``, ``--epochs``): the
ratio of networks per hour is what is measured, and it does not depend on how long each
network trains as long as a network takes much longer than a worker takes to start.

A temporary run directory gets the single-task models and both affinities first (not timed);
then the same study (one budget, ``--random`` random trees, one seed) is trained twice from
the same copy of that run: once with ``--jobs 1`` (one network at a time in this process, on
every thread torch gives it) and once with ``--jobs N`` (N worker processes, the free cores
split between them). Each is timed end to end (planning, training, the report). The load
average is printed beside the figures: the goal (>= 1.8x with ``--jobs 2`` on a 2-core CPU)
holds on a quiet machine only, and figures under load are provisional.

Usage::

    python tools/bench_jobs.py [--jobs 2] [--images 200] [--epochs 1] [--random 2] [--tasks 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = """\
name: bench-jobs
seed: 0
data:
  dataset: scenes
  image_size: [{size}, {size}]
  splits: {{train: {images}, val: {val}, test: {val}, affinity: {val}}}
tasks: {tasks}
model: {{backbone: resnet18, width: 0.25, output_stride: 8, head_channels: 32}}
train: {{epochs: {epochs}, batch_size: 32, optimizer: adam, lr: 0.002, weight_decay: 0.0001, schedule: poly,
        device: cpu}}
affinity: {{images: {val}}}
branched: {{init: random}}
"""
TASKS = ["seg", "depth", "normals", "edges", "keypoints"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="networks at once in the second run (default 2)")
    parser.add_argument("--tasks", type=int, default=5, help="tasks of the scenes data (2..5; the study has 5)")
    parser.add_argument("--images", type=int, default=200, help="training images (the study has 500)")
    parser.add_argument("--val", type=int, default=64, help="validation and test images (the study has 150)")
    parser.add_argument("--size", type=int, default=48, help="image side in pixels (the study's: 48)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs (the study has 4)")
    parser.add_argument("--random", type=int, default=2, help="random trees of the budget")
    parser.add_argument("--keep", default=None, help="keep the run directory here (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("BRANCHNET_QUIET", "1")

    from branchnet.config import load_config
    from branchnet.steps.affinity import affinity_from_runs, fafs_from_runs
    from branchnet.steps.evaluate import evaluate
    from branchnet.steps.train_single import train_single

    names = TASKS[: max(2, min(5, args.tasks))]
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        path = root / "bench.yaml"
        path.write_text(CONFIG.format(size=args.size, images=args.images, val=args.val, epochs=args.epochs,
                                      tasks="[" + ", ".join(names) + "]"))
        config = load_config(path)
        base = root / "base"
        print(f"setting up: {len(names)} tasks, {args.images} images of {args.size}x{args.size}, {args.epochs} "
              f"epoch(s): single-task models and affinities (not timed)", flush=True)
        train_single(config, base, quiet=True)
        affinity_from_runs(config, base, progress=False, device="cpu")
        fafs_from_runs(config, base, progress=False, device="cpu")
        options = dict(sweep=1, random=args.random, seeds=1, quiet=True)

        results: dict[int, tuple[float, int]] = {}
        loads = [os.getloadavg()]
        for jobs in (1, args.jobs):
            runs = root / f"jobs{jobs}"
            shutil.copytree(base, runs)
            print(f"--jobs {jobs}: training ...", flush=True)
            started = time.perf_counter()
            summary = evaluate(config, runs, jobs=jobs, **options)
            seconds = time.perf_counter() - started
            networks = len(list((runs / "evaluate" / "nets").glob("*/seed*")))
            results[jobs] = (seconds, networks)
            loads.append(os.getloadavg())
            assert summary is not None

    print(f"\nload average {loads[0][0]:.2f} before, {loads[1][0]:.2f} after --jobs 1, {loads[2][0]:.2f} after "
          f"--jobs {args.jobs} (figures under load are provisional)")
    print("| run | networks | seconds | networks per hour |")
    print("|---|---:|---:|---:|")
    rates = {}
    for jobs, (seconds, networks) in results.items():
        rates[jobs] = 3600 * networks / seconds
        print(f"| --jobs {jobs} | {networks} | {seconds:.1f} | {rates[jobs]:.0f} |")
    ratio = rates[args.jobs] / rates[1]
    print(f"\n--jobs {args.jobs} gives {ratio:.2f}x the networks per hour of --jobs 1 (goal >= 1.8x with --jobs 2 on "
          "a quiet 2-core CPU)")
    return {"ratio": ratio, "load": loads[0][0]}


if __name__ == "__main__":
    main()

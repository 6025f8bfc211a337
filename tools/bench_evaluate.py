"""Benchmark: the bookkeeping of ``branchnet evaluate`` per trained network against its training.

Trains a small study (its own run directory in a temporary folder: single-task models and
both affinities first, not timed) and times, inside ``evaluate``:

* ``fit``: the training of every network (``branchnet.train.engine.fit``: epochs and the
  final validation and test evaluation), the work the study exists for;
* everything else: planning (``prepare_study``: the baselines, affinity files and the reuse
  rule of every network), building each network and its datasets, committing it
  (``commit_network``: model.pt and metrics.json hashed as they are written, the record; a
  study network draws no curves.png), the report (trees.csv, summary with its bootstraps,
  pareto.png), once per call;

then a rerun where every network is reused (the cost of asking again; goal under a second).
The goal is bookkeeping under 5% of the training time (docs/evaluate.md, "Benchmark"); it
shrinks as networks grow (it is nearly constant per network), so ``--epochs``/``--images``
set the size. CPU figures; the load average is printed beside them (figures under load are
provisional).

Usage::

    python tools/bench_evaluate.py [--tasks 3] [--images 48] [--size 48] [--epochs 2] [--seeds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = """\
name: bench-evaluate
seed: 0
data:
  dataset: scenes
  image_size: [{size}, {size}]
  splits: {{train: {images}, val: 32, test: 32, affinity: 16}}
  options: {{max_objects: 3}}
tasks: {tasks}
model: {{backbone: resnet18, width: 0.25, output_stride: 8, head_channels: 16}}
train: {{epochs: {epochs}, batch_size: 16, lr: 0.002, device: cpu}}
affinity: {{images: 16}}
"""


class Timer:
    """Wraps a module attribute and adds up the seconds spent in it."""

    def __init__(self, module, name: str) -> None:
        self.module, self.name, self.seconds, self.calls = module, name, 0.0, 0
        self.real = getattr(module, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.real(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        setattr(module, name, timed)

    def restore(self) -> None:
        setattr(self.module, self.name, self.real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3, help="tasks of the scenes data (2..5)")
    parser.add_argument("--images", type=int, default=96, help="training images")
    parser.add_argument("--size", type=int, default=48, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--random", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("BRANCHNET_QUIET", "1")

    import branchnet.steps.evaluate as ev
    import branchnet.steps.tree_networks as tree_networks
    import branchnet.train.engine as engine
    from branchnet.config import load_config
    from branchnet.steps.affinity import affinity_from_runs, fafs_from_runs
    from branchnet.steps.train_single import train_single

    names = ["seg", "depth", "normals", "edges", "keypoints"][: max(2, min(5, args.tasks))]
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(CONFIG.format(size=args.size, images=args.images, epochs=args.epochs,
                                      tasks="[" + ", ".join(names) + "]"))
        config = load_config(path)
        runs = Path(tmp) / "runs"
        print(f"setting up: {len(names)} tasks, {args.images} images of {args.size}x{args.size}, "
              f"{args.epochs} epochs (not timed)", flush=True)
        train_single(config, runs, quiet=True)
        affinity_from_runs(config, runs, progress=False, device="cpu")
        fafs_from_runs(config, runs, progress=False, device="cpu")
        options = dict(sweep=1, random=args.random, seeds=args.seeds, quiet=True)

        # train_tree_network imports commit_network at module import: time it there
        timers = {"fit": Timer(engine, "fit"), "commit": Timer(tree_networks, "commit_network"),
                  "plan": Timer(ev, "prepare_study"), "report": Timer(ev, "write_report")}
        load = os.getloadavg()
        start = time.perf_counter()
        ev.evaluate(config, runs, **options)
        total = time.perf_counter() - start
        for timer in timers.values():
            timer.restore()
        again = time.perf_counter()
        ev.evaluate(config, runs, **options)
        rerun = time.perf_counter() - again
        load_after = os.getloadavg()

    fit, networks = timers["fit"].seconds, timers["fit"].calls
    overhead = total - fit
    other = overhead - timers["commit"].seconds - timers["plan"].seconds - timers["report"].seconds
    print(f"\n{networks} networks trained; load average {load[0]:.2f} before, {load_after[0]:.2f} after "
          "(figures under load are provisional)")
    print("| part | seconds | per network | share of training |")
    print("|---|---:|---:|---:|")
    rows = [("training (fit)", fit), ("bookkeeping in all", overhead),
            ("  planning and reuse checks", timers["plan"].seconds), ("  commit (save and hash, the record)",
                                                                    timers["commit"].seconds),
            ("  report (trees.csv, summary, pareto.png)", timers["report"].seconds),
            ("  building networks and datasets, messages", other)]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / max(networks, 1):.3f} | {100 * seconds / fit:.2f}% |")
    per_network = (overhead - timers["report"].seconds - timers["plan"].seconds) / max(networks, 1)
    once = timers["report"].seconds + timers["plan"].seconds
    print(f"\nrerun with every network reused: {rerun:.2f} s (goal under 1 s); load average {load_after[0]:.2f}")
    print(f"bookkeeping per network: {overhead / max(networks, 1):.3f} s against {fit / max(networks, 1):.2f} s "
          f"of training ({100 * overhead / fit:.2f}%; goal under 5%)")
    print(f"of which {per_network:.3f} s per network and {once:.2f} s once per call: under 5% for networks that "
          f"train at least {20 * per_network:.1f} s (with {networks} of them, "
          f"{20 * (per_network + once / max(networks, 1)):.1f} s)")


if __name__ == "__main__":
    main()

"""Maximum Roaming: training throughput and memory against the plain network, and the scenes study.

Throughput (default): images/s and peak memory of a training step (forward, loss, backward, Adam
step) of the default scenes network (resnet18 x0.25, OS 8, 64 x 64, the five scenes tasks) with
and without roaming, for the all-shared network and a branched tree. The paper's method runs
one forward pass per task through every shared node, so the goal is a time within
1.2 x (tasks per shared node) x the plain network's; the table prints both and the node
executions per forward pass. Each case runs in a fresh process (its own peak memory).

    python tools/bench_roaming.py [--device cpu|cuda] [--steps 8] [--batch-size 32]

Study (``--study DIR``): trains on scenes, for 3 seeds, the single-task baselines, the all-shared
network and the tree of the 2M budget (built once, from seed 0's RSA affinity), each plainly and
with roaming at p = 0.5 and 0.8, then the same for six scenes attributes (the CelebA-style
tasks) on the all-shared network; ``--table DIR`` prints the markdown tables of docs/training.md.
Results accumulate in DIR/results.json (a rerun skips what is there: the run store reuses every
trained network).

    nice -n 10 python tools/bench_roaming.py --study /tmp/roaming-study > /tmp/roaming-study.log 2>&1
    python tools/bench_roaming.py --table /tmp/roaming-study
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TASKS = ("seg", "depth", "normals", "edges", "keypoints")
TREE = [[list(TASKS)], [list(TASKS)], [["seg", "keypoints"], ["depth", "normals", "edges"]],
        [["seg"], ["keypoints"], ["depth", "normals"], ["edges"]]]
CASES = [  # (label, tree, p or None)
    ("all-shared, plain", "shared", None),
    ("all-shared, p = 0.8", "shared", 0.8),
    ("all-shared, p = 0.5", "shared", 0.5),
    ("tree 1-1-2-4, plain", "tree", None),
    ("tree 1-1-2-4, p = 0.8", "tree", 0.8),
    ("tree 1-1-2-4, p = 0.5", "tree", 0.5),
]


def scene_tasks():
    from branchnet.tasks import TaskSpec, make_task

    specs = {"seg": TaskSpec("segmentation", num_classes=4), "depth": TaskSpec("depth"),
             "normals": TaskSpec("normals"), "edges": TaskSpec("edges"), "keypoints": TaskSpec("keypoints")}
    return [make_task(name, specs[name]) for name in TASKS]


def measure(tree: str, p: float | None, steps: int, batch: int, device: str) -> dict:
    """One case in this process: images/s and peak memory of the training step."""
    import torch

    from branchnet.config import ModelConfig
    from branchnet.nn.branched import BranchedNet
    from branchnet.train.roaming import RoamingPlan, roaming_layers
    from branchnet.tree import shared_partitions

    torch.manual_seed(0)
    tasks = scene_tasks()
    partitions = shared_partitions(list(TASKS), 4) if tree == "shared" else TREE
    model = BranchedNet(tasks, partitions, ModelConfig(backbone="resnet18", width=0.25, output_stride=8,
                                                       head_channels=32), (64, 64)).to(device)
    passes = sum(len(level) for level in partitions)
    if p is not None:
        masks = model.enable_channel_masks()
        plan = RoamingPlan(roaming_layers(model), p, 1.0, seed=0)
        for layer, used in zip(plan.layers, plan.used):
            masks.set_masks(layer.key, layer.point, used)
        masks.refresh()
        passes = masks.forward_passes()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, 64, 64, generator=g).to(device)
    targets = {"seg": torch.randint(0, 4, (batch, 64, 64), generator=g),
               "depth": torch.rand(batch, 1, 64, 64, generator=g) + 0.5,
               "normals": torch.nn.functional.normalize(torch.randn(batch, 3, 64, 64, generator=g), dim=1),
               "edges": (torch.rand(batch, 1, 64, 64, generator=g) > 0.9).float(),
               "keypoints": torch.rand(batch, 1, 64, 64, generator=g)}
    targets = {k: v.to(device) for k, v in targets.items()}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        out = model(x)
        loss = sum(t.loss(out[t.name].float(), targets[t.name]) for t in tasks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    shared = [len(g) for level in partitions for g in level if len(g) >= 2]
    return {"images_per_s": steps * batch / seconds, "seconds_per_step": seconds / steps,
            "cpu_per_step": cpu / steps, "peak_mb": peak,
            "passes": passes, "plain_passes": sum(len(level) for level in partitions),
            "tasks_per_shared_node": max(shared)}


def throughput(args) -> None:
    print(f"training step, batch {args.batch_size}, {args.steps} steps, device {args.device}, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} (before)")
    print("| case | node passes | img/s | s/step | CPU s/step | peak MB | wall vs plain | CPU vs plain | "
          "goal: 1.2 x T x plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base: dict[str, tuple[float, float]] = {}
    for i, (label, tree, p) in enumerate(CASES):
        out = subprocess.run([sys.executable, __file__, "--case", str(i), "--steps", str(args.steps),
                              "--batch-size", str(args.batch_size), "--device", args.device],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if p is None:
            base[tree] = (r["seconds_per_step"], r["cpu_per_step"])
            ratio, cpu_ratio, goal = 1.0, 1.0, "-"
        else:
            ratio, cpu_ratio = r["seconds_per_step"] / base[tree][0], r["cpu_per_step"] / base[tree][1]
            bound = 1.2 * r["tasks_per_shared_node"]
            goal = f"{bound:.1f}x ({'met' if max(ratio, cpu_ratio) <= bound else 'missed'})"
        print(f"| {label} | {r['passes']} (plain {r['plain_passes']}) | {r['images_per_s']:.1f} | "
              f"{r['seconds_per_step']:.3f} | {r['cpu_per_step']:.3f} | {r['peak_mb']:.0f} | {ratio:.2f}x | "
              f"{cpu_ratio:.2f}x | {goal} |")
    print(f"load average {os.getloadavg()[0]:.2f} (after)")


# ------------------------------------------------------------------ the study

STUDY_SPLITS = {"train": 500, "val": 200, "test": 200, "affinity": 200}
ATTRIBUTES = ("attr_red", "attr_blue", "attr_sphere", "attr_box", "attr_left", "attr_large")
SEEDS = (0, 1, 2)
SETTINGS = (None, 0.8, 0.5)
#: One update step per optimiser step (500 images / batch 32 = 16 steps per epoch).
DELTA = 1 / 16


def study_config(root: Path, seed: int, tasks, roaming: float | None):
    from branchnet.config import load_config

    sets = [f"seed={seed}", f"data.root={root / 'cache'}", f"data.splits={json.dumps(STUDY_SPLITS)}",
            f"tasks={json.dumps(list(tasks))}", "train.device=cpu"]
    if roaming is not None:
        sets.append(f"train.roaming={json.dumps({'p': roaming, 'delta': DELTA})}")
    return load_config(Path(__file__).resolve().parents[1] / "configs" / "scenes.yaml", sets=sets)


def study(root: Path) -> None:
    from branchnet.affinity.file import load_affinity
    from branchnet.steps.affinity import affinity_from_runs
    from branchnet.steps.build import build_tree
    from branchnet.steps.train_branched import train_branched
    from branchnet.steps.train_single import train_single

    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def record(key: str, metrics: dict) -> None:
        results[key] = {"test": metrics["test"], "val": metrics["val"], "delta_mtl": metrics["delta_mtl"]["test"]["delta_mtl"],
                        "seconds": metrics["train_seconds"], "images_per_second": metrics["images_per_second"],
                        "roaming": metrics.get("roaming") and {k: v for k, v in metrics["roaming"].items()
                                                               if k != "streams"}}
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{time.strftime('%H:%M:%S')} {key}: delta {results[key]['delta_mtl']:+.2f}% "
              f"({metrics['train_seconds']:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)

    tree_file = root / "tree.json"
    for kind, tasks, networks in (("scenes", TASKS, ("shared", "tree")), ("attributes", ATTRIBUTES, ("shared",))):
        for seed in SEEDS:
            runs = root / kind / f"seed{seed}"
            train_single(study_config(root, seed, tasks, None), runs, quiet=True)
            if "tree" in networks and not tree_file.is_file():
                config = study_config(root, 0, tasks, None)
                affinity_from_runs(config, runs, progress=False)
                build_tree(load_affinity(runs / "affinity.npz"), 2e6, out=tree_file)
            for network in networks:
                spec = "shared" if network == "shared" else tree_file
                for p in SETTINGS:
                    key = f"{kind}/{network}/{'plain' if p is None else f'p{p}'}/seed{seed}"
                    if key in results:
                        continue
                    name = network if p is None else f"{network}-p{p}"
                    metrics = train_branched(study_config(root, seed, tasks, p), runs, spec, name=name, quiet=True)
                    record(key, metrics)


def table(root: Path) -> None:
    import numpy as np

    results = json.loads((root / "results.json").read_text())
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for key, value in results.items():
        kind, network, setting, _seed = key.split("/")
        groups.setdefault((kind, network, setting), []).append(value)
    print("| tasks | network | roaming | test Δ_MTL (%) mean ± std | per seed | train s (mean) | img/s |")
    print("|---|---|---|---:|---|---:|---:|")
    for (kind, network, setting), values in groups.items():
        deltas = np.array([v["delta_mtl"] for v in values])
        print(f"| {kind} | {network} | {setting} | {deltas.mean():+.2f} ± {deltas.std(ddof=1) if len(deltas) > 1 else 0:.2f} "
              f"| {', '.join(f'{d:+.2f}' for d in deltas)} | {np.mean([v['seconds'] for v in values]):.0f} "
              f"| {np.mean([v['images_per_second'] for v in values]):.1f} |")
    print()
    metric_names = {}
    for (kind, network, setting), values in groups.items():
        tasks = list(values[0]["test"])
        if kind not in metric_names:
            metric_names[kind] = tasks
            print(f"\n{kind}: test main metric per task, mean over seeds")
            print("| network | roaming | " + " | ".join(tasks) + " |")
            print("|---|---|" + "---:|" * len(tasks))
        main = {"seg": "mIoU", "depth": "rmse", "normals": "mean", "edges": "odsF", "keypoints": "l1"}
        cells = []
        for task in tasks:
            metric = main.get(task, "accuracy")
            cells.append(f"{np.mean([v['test'][task][metric] for v in values]):.3f}")
        print(f"| {network} | {setting} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--study", type=Path, help="run the scenes study into this directory")
    parser.add_argument("--table", type=Path, help="print the study's tables from this directory")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        _label, tree, p = CASES[args.case]
        print(json.dumps(measure(tree, p, args.steps, args.batch_size, args.device)))
    elif args.study is not None:
        study(args.study)
    elif args.table is not None:
        table(args.table)
    else:
        throughput(args)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    main()

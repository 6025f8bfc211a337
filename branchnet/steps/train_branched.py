"""Step 4 of the pipeline: train a branched network from a tree (``branchnet train``).

``tree`` is a ``tree.json`` from ``branchnet build``, or ``shared`` (one group at every
stage: the usual multi-task baseline) or ``separate`` (one branch per task from the
root: the single-task networks side by side). Writes
``<runs>/branched/<name>/model.pt`` and ``metrics.json`` with per-task metrics, params,
FLOPs and the multi-task delta against the single-task models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from branchnet.train import distributed as dist_utils
from branchnet.nn.backbones import NUM_STAGES
from branchnet.nn.model_file import save_model
from branchnet.config import Config
from branchnet.data import build_dataset, build_tasks
from branchnet.tasks.delta import multi_task_delta
from branchnet.train.engine import fit
from branchnet.errors import BadInput
from branchnet.atomic import atomic_write_json, ensure_writable_dir
from branchnet.nn.branched import BranchedNet
from branchnet.tree import Partitions
from branchnet.progress import say
from branchnet.steps.train_single import load_single_states, model_metrics, prepare_data, read_single_metrics
from branchnet.tree import load_tree, separate_partitions, shared_partitions

BRANCHED_DIR = "branched"
TREE_NAMES = ("shared", "separate")


def branched_dir(runs: Path, name: str) -> Path:
    return Path(runs) / BRANCHED_DIR / name


def resolve_tree(spec: str | Path, config: Config) -> tuple[Partitions, str, dict[str, Any]]:
    """Partitions, default run name and tree info for ``spec`` (a tree.json, shared, separate).

    Checks that the tree is for this config: the same tasks, the backbone's number of
    stages, and (when the tree records one) the same backbone.
    """
    tasks = config.task_names
    if str(spec) == "shared":
        return shared_partitions(tasks, NUM_STAGES), "shared", {"kind": "shared"}
    if str(spec) == "separate":
        return separate_partitions(tasks, NUM_STAGES), "separate", {"kind": "separate"}
    path = Path(spec)
    if not path.is_file() and path.suffix != ".json":
        raise BadInput(f"--tree '{spec}' is neither a tree.json file nor one of: shared, separate")
    tree = load_tree(path)
    if sorted(tree.tasks) != sorted(tasks):
        only_tree = sorted(set(tree.tasks) - set(tasks))
        only_config = sorted(set(tasks) - set(tree.tasks))
        raise BadInput(f"tree {path} is for tasks {', '.join(tree.tasks)} but the config has {', '.join(tasks)}"
                       f" (only in the tree: {', '.join(only_tree) or '-'}; only in the config: "
                       f"{', '.join(only_config) or '-'}); rebuild it from this config's affinity")
    if len(tree.partitions) != NUM_STAGES:
        raise BadInput(f"tree {path} has {len(tree.partitions)} levels but {config.model.backbone} is split into "
                       f"{NUM_STAGES} stages; rebuild it from an affinity measured on this backbone")
    if tree.backbone and tree.backbone != config.model.backbone:
        raise BadInput(f"tree {path} was built for backbone {tree.backbone}, the config uses "
                       f"{config.model.backbone}; rebuild it or set --backbone {tree.backbone}")
    return tree.partitions, path.stem, {"kind": "tree", "path": str(path), **tree.to_json()}


def train_branched(config: Config, runs: Path, tree: str | Path, *, name: str | None = None,
                   resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train the branched network of ``tree``; returns (and writes) its metrics."""
    runs = Path(runs)
    partitions, default_name, tree_info = resolve_tree(tree, config)
    name = name or default_name
    tasks = build_tasks(config)
    baselines = {t.name: read_single_metrics(runs, t.name) for t in tasks}  # fail before training
    out_dir = branched_dir(runs, name)
    if dist_utils.is_main():
        ensure_writable_dir(out_dir)
    prepare_data(config, ("train", "val", "test"))
    torch.manual_seed(config.seed)
    model = BranchedNet(tasks, partitions, config.model, config.image_size)
    if tree_info.get("params") is not None and tree_info.get("backbone"):
        params = sum(p.numel() for p in model.parameters())
        if int(tree_info["params"]) != params:
            raise BadInput(f"tree {tree_info['path']} counts {tree_info['params']} parameters but this config's "
                           f"network has {params}: it was built for other heads or another input size; "
                           "rebuild it from this run's affinity.npz")
    if config.branched.init != "random":
        model.init_from_single(load_single_states(runs, model.task_names), config.branched.init)
    splits = {split: build_dataset(config, split) for split in ("train", "val", "test")}
    result = fit(model, tasks, config, out_dir, splits["train"], splits["val"], splits["test"],
                 resume=resume, quiet=quiet, label=f"branched/{name}")
    metrics = model_metrics(model, None, result, config)
    metrics["name"] = name
    metrics["tree"] = tree_info
    metrics["init"] = config.branched.init
    metrics["weighting"] = config.train.weighting
    metrics["delta_mtl"] = {
        split: multi_task_delta(getattr(result, split), {t: b[split][t] for t, b in baselines.items()}, tasks)
        for split in ("val", "test")
    }
    if dist_utils.is_main():
        save_model(out_dir / "model.pt", model, config, "branched", {"tree": tree_info})
        atomic_write_json(out_dir / "metrics.json", metrics)
        (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    dist_utils.barrier()
    say(f"branched/{name}: test delta_mtl = {metrics['delta_mtl']['test']['delta_mtl']:+.2f}% "
        f"({metrics['params'] / 1e6:.2f}M params, {metrics['flops'] / 1e9:.3f} GFLOPs)")
    return metrics

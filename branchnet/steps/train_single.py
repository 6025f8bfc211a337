"""Step 1 of the pipeline: one encoder + head per task (``branchnet train-single``).

Writes ``<runs>/single/<task>/model.pt`` and ``metrics.json`` per task. Models already
trained are skipped unless ``force``; an interrupted model continues from its
per-epoch checkpoint with ``resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from branchnet.train import distributed as dist_utils
from branchnet.nn.backbones import NUM_STAGES
from branchnet.nn.model_file import save_model
from branchnet.config import Config
from branchnet.data import build_dataset, build_tasks
from branchnet.train.engine import fit
from branchnet.errors import BadInput, unknown_choice
from branchnet.atomic import atomic_write_json, ensure_writable_dir, load_checkpoint
from branchnet.nn.branched import BranchedNet
from branchnet.tree import shared_partitions
from branchnet.progress import say
from branchnet.tasks import Task

SINGLE_DIR = "single"


def single_dir(runs: Path, task: str) -> Path:
    return Path(runs) / SINGLE_DIR / task


def is_trained(runs: Path, task: str) -> bool:
    directory = single_dir(runs, task)
    return (directory / "model.pt").is_file() and (directory / "metrics.json").is_file()


def select_tasks(config: Config, names: Sequence[str] | None) -> list[Task]:
    """The config's tasks, or the subset ``names`` (each must be one of the config's)."""
    tasks = build_tasks(config)
    if not names:
        return tasks
    by_name = {t.name: t for t in tasks}
    for name in names:
        if name not in by_name:
            raise unknown_choice("task of this config", name, by_name)
    return [by_name[n] for n in names]


def model_metrics(model: BranchedNet, task: Task | None, result, config: Config) -> dict[str, Any]:
    """The ``metrics.json`` content shared by single-task and branched models."""
    costs = model.costs()
    out: dict[str, Any] = {
        "tasks": {t.name: {"type": t.type_name, "main_metric": t.main_metric,
                           "higher_is_better": t.higher_is_better} for t in model.tasks},
        "val": result.val, "test": result.test,
        "params": costs["params"], "flops": costs["flops"],
        "stage_params": costs["stage_params"], "stage_flops": costs["stage_flops"],
        "head_params": costs["head_params"], "head_flops": costs["head_flops"],
        "backbone": config.model.backbone, "locations": list(model.layout.locations),
        "image_size": list(config.image_size), "partitions": model.partitions,
        "epochs": len(result.history), "history": result.history,
        "train_seconds": round(result.seconds, 2), "images_per_second": round(result.images_per_second, 1),
        "device": result.device, "world_size": result.world_size,
    }
    if task is not None:
        out["task"] = task.name
    return out


def train_single(config: Config, runs: Path, tasks: Sequence[str] | None = None, *, resume: bool = False,
                 force: bool = False, quiet: bool = False) -> dict[str, dict[str, Any]]:
    """Train the single-task model of each task; returns ``{task: metrics}``.

    Every model uses the same seed, hence the same initial encoder, so that the models
    differ only by what their task taught them (the paper trains them "under the same
    conditions").
    """
    import torch

    selected = select_tasks(config, tasks)
    runs = Path(runs)
    if dist_utils.is_main():
        ensure_writable_dir(runs / SINGLE_DIR)
    prepare_data(config, ("train", "val", "test"), [t.name for t in selected])
    results: dict[str, dict[str, Any]] = {}
    for task in selected:
        out_dir = single_dir(runs, task.name)
        if is_trained(runs, task.name) and not force:
            say(f"single/{task.name}: already trained, skipped (--force retrains)")
            results[task.name] = read_single_metrics(runs, task.name)
            continue
        if dist_utils.is_main():
            ensure_writable_dir(out_dir)
        if force and not resume:
            (out_dir / "checkpoint.pt").unlink(missing_ok=True)
        torch.manual_seed(config.seed)
        model = BranchedNet([task], shared_partitions([task.name], NUM_STAGES), config.model, config.image_size)
        splits = {split: build_dataset(config, split, [task.name]) for split in ("train", "val", "test")}
        result = fit(model, [task], config, out_dir, splits["train"], splits["val"], splits["test"],
                     resume=resume, quiet=quiet, label=f"single/{task.name}")
        metrics = model_metrics(model, task, result, config)
        if dist_utils.is_main():
            save_model(out_dir / "model.pt", model, config, "single")
            atomic_write_json(out_dir / "metrics.json", metrics)
            (out_dir / "checkpoint.pt").unlink(missing_ok=True)
        dist_utils.barrier()
        results[task.name] = metrics
        main = task.main_metric
        say(f"single/{task.name}: test {main} = {metrics['test'][task.name][main]:.4g} "
            f"({metrics['params'] / 1e6:.2f}M params, {result.seconds:.0f}s)")
    return results


def prepare_data(config: Config, splits: Sequence[str], tasks: Sequence[str] | None = None) -> None:
    """Make sure the splits exist (generated/cached, readable for ``tasks``) before every rank opens them."""
    if dist_utils.is_main():
        for split in splits:
            build_dataset(config, split, list(tasks) if tasks is not None else None)
    dist_utils.barrier()


def read_single_metrics(runs: Path, task: str) -> dict[str, Any]:
    """The ``metrics.json`` of task ``task``'s single-task model."""
    import json

    path = single_dir(runs, task) / "metrics.json"
    if not path.is_file():
        raise BadInput(f"no single-task model for '{task}' in {Path(runs) / SINGLE_DIR}; "
                       "run `branchnet train-single` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise BadInput(f"{path} is not valid JSON; retrain with `branchnet train-single --task {task} --force`") from None


def load_single_states(runs: Path, tasks: Sequence[str]) -> dict[str, dict]:
    """State dicts of the single-task models of ``tasks`` (for initialising branched nets)."""
    missing = [t for t in tasks if not (single_dir(runs, t) / "model.pt").is_file()]
    if missing:
        raise BadInput(f"no single-task model for {', '.join(missing)} in {Path(runs) / SINGLE_DIR}; "
                       "run `branchnet train-single` first")
    return {t: load_checkpoint(single_dir(runs, t) / "model.pt")["state_dict"] for t in tasks}


"""Step 1 of the pipeline: one encoder + head per task (``branchnet train-single``).

Writes ``<runs>/single/<task>/`` (:mod:`branchnet.runs`): ``model.pt``, ``metrics.json``,
``history.csv``, ``curves.png`` and the record ``run.json``. A model already trained with
the same settings is kept; one trained with other settings stops the step (exit 2, naming
the setting) unless ``force``; an interrupted one continues from its per-epoch checkpoint
with ``resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from branchnet.config import Config
from branchnet.data import build_dataset, prepare_splits, select_tasks
from branchnet.nn import NUM_STAGES, BranchedNet
from branchnet.progress import say
from branchnet.runs import (claim_network, network_metrics, plan_network, read_metrics, single_dir,
                            single_fingerprint)
from branchnet.steps.commit import commit_network
from branchnet.train.engine import fit
from branchnet.train.weighting import LossWeighting
from branchnet.tree import shared_partitions


def train_single(config: Config, runs: Path, tasks: Sequence[str] | None = None, *, resume: bool = False,
                 force: bool = False, quiet: bool = False) -> dict[str, dict[str, Any]]:
    """Train the single-task model of each task; returns ``{task: metrics}``.

    Every model uses the same seed, hence the same initial encoder, so that the models
    differ only by what their task taught them (the paper trains them "under the same
    conditions"). A single-task model trains its one loss unweighted: the config's loss
    weighting and fixed loss weights are multi-task settings. Every existing model is
    checked against the reuse rule before anything is trained.
    """
    selected = select_tasks(config, tasks)
    runs = Path(runs)
    plans = {t.name: plan_network(single_dir(runs, t.name), single_fingerprint(config, t.name),
                                  f"single/{t.name}", force=force, resume=resume) for t in selected}
    prepare_splits(config, ("train", "val", "test"), [t.name for t in selected])
    results: dict[str, dict[str, Any]] = {}
    for task in selected:
        plan = plans[task.name]
        label = f"single/{task.name}"
        if plan.note and not quiet:
            say(plan.note)
        if plan.action != "reuse":
            with claim_network(plan, label, force=force, resume=resume) as plan:
                if plan.action != "reuse":
                    results[task.name] = _train_one(config, task, plan, quiet)
                    continue
        results[task.name] = read_metrics(plan.directory, label, "retrain it with --force")
    return results


def _train_one(config: Config, task, plan, quiet: bool) -> dict[str, Any]:
    """Train and commit one single-task network (its lock held)."""
    import torch

    out_dir = plan.directory
    torch.manual_seed(config.seed)
    model = BranchedNet([task], shared_partitions([task.name], NUM_STAGES), config.model, config.image_size)
    splits = {split: build_dataset(config, split, [task.name]) for split in ("train", "val", "test")}
    result = fit(model, [task], config, out_dir, splits["train"], splits["val"], splits["test"],
                 resume=plan.action == "resume", quiet=quiet, label=f"single/{task.name}",
                 weighting=LossWeighting([task.name]), fingerprint=plan.fingerprint)
    metrics = network_metrics(model, result, config, task=task.name)
    commit_network(out_dir, model, config, "single", plan.fingerprint, metrics)
    main = task.main_metric
    say(f"single/{task.name}: test {main} = {metrics['test'][task.name][main]:.4g} "
        f"({metrics['params'] / 1e6:.2f}M params, {result.seconds:.0f}s)")
    return metrics

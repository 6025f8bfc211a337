"""Candidate networks for the task-grouping selection (``branchnet groupings``).

Standley et al., "Which Tasks Should Be Learned Together", Sec. 3.1: train one network
for every group of tasks -- a shared encoder with one head per task of the group (the
all-shared tree of the group) -- plus thinner single-task networks, then write the
candidates CSV that :func:`branchnet.selection.select_networks` chooses from.

What is trained, for the tasks ``T`` (the config's, or ``tasks``):

* every group ``G`` of ``T`` with ``1 <= |G| <= max_size`` at width 1 (the configured
  encoder); with ``predict_higher_order`` only the groups of one and two tasks;
* for each other width ``w`` of ``widths`` (a factor on ``model.width``: 0.5 halves
  every channel count of the encoder, the heads stay as configured): the single-task
  networks (``widths_for="singles"``, the paper's Sec. 4.2 setting) or every trained
  group (``widths_for="all"``).

Runs go to ``<runs>/groupings/<name>/`` (a network directory of :mod:`branchnet.runs`:
``model.pt``, ``metrics.json``, the record ``run.json``) where ``name`` is :func:`~branchnet.selection.group_name`
(``seg+depth``, ``seg@0.5``). The tables go to ``<runs>/groupings/candidates.csv``
(docs/design.md format: ``name,cost,<task>...``, each cell the network's validation loss on
that task) and the companion ``<runs>/groupings/candidates.json`` (every row's cost,
FLOPs, params, kind, and its validation and test metrics on each task).

Cost. ``cost(n) = flops(n) / reference_flops`` with ``flops`` a network's per-image
FLOPs (encoder + its heads, :meth:`BranchedNet.costs`, at the configured image size)
and ``reference_flops`` the mean of ``flops`` over the full-width single-task networks
of ``T``. So the single-task networks' costs sum to exactly ``|T|``, a single-task
network costs exactly 1 when heads cost the same (and always when ``|T| = 1``), and a
budget of ``b`` is "b standard networks" as in the paper (its SNT, Sec. 4.2).

Early-stopping approximation (ESA, Sec. 3.3.1): ``fraction`` F < 1 trains every network
for F of the configured optimiser steps (``epochs x batches per epoch``); see
:func:`~branchnet.selection.esa.esa_schedule`. Higher-order approximation (HOA, Sec. 3.3.2): groups of three or
more tasks are predicted from the pair networks by
:func:`~branchnet.selection.higher_order_approximation`, at the cost their network
would have.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branchnet.atomic import atomic_write_json, ensure_writable_dir
from branchnet.config import Config
from branchnet.errors import BadInput
from branchnet.progress import say
from branchnet.runs import (candidate_dir, claim_network, fingerprint, groupings_dir, network_metrics, plan_network,
                            read_json, read_metrics)
from branchnet.selection import (Candidate, CandidateTable, group_name, higher_order_approximation,
                                 tree_candidate, write_candidates)
from branchnet.selection.esa import EsaSchedule, esa_schedule
from branchnet.selection.plan import Network, check_plan, parse_widths, plan_networks  # noqa: F401 (re-exported)
from branchnet.steps.commit import commit_network
from branchnet.steps.grouping_costs import CostModel, cost_model, scaled_config
from branchnet import distributed as dist_utils

CANDIDATES_CSV = "candidates.csv"
CANDIDATES_JSON = "candidates.json"


def network_dir(runs: Path, network: Network) -> Path:
    return candidate_dir(runs, network.name)


def network_fingerprint(config: Config, network: Network, schedule: EsaSchedule) -> dict[str, Any]:
    """What decides a candidate network's training (:func:`branchnet.runs.fingerprint`): the
    training settings at the network's width, its group, and the (early-stopping) schedule."""
    return fingerprint("candidate", scaled_config(config, network.width), list(network.tasks),
                       width=network.width, fraction=schedule.fraction, epochs=schedule.epochs,
                       steps=schedule.steps, train_images=schedule.train_images)


def train_subset(dataset, size: int, seed: int):
    """A fixed random subset of ``size`` items of ``dataset`` (the same for a given seed)."""
    import torch
    from torch.utils.data import Subset

    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, sorted(order[:size].tolist()))


@dataclass(frozen=True)
class TreeRun:
    """A trained branched network (``branchnet train``'s metrics.json) as a candidate."""

    path: Path
    candidate: Candidate
    metrics: dict[str, Any]


def read_tree_run(path: str | Path, tasks: Sequence[str], costs: CostModel, backbone: str,
                  image_size: Sequence[int]) -> TreeRun:
    """Read ``RUNS/branched/<name>/metrics.json`` (or its directory) and price it like the groupings.

    The tree must solve exactly ``tasks`` and use the same encoder (backbone, input
    size, and stage FLOPs equal to the full-width networks'), so that its cost
    ``flops / reference_flops`` compares with theirs. Raises BadInput otherwise.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise BadInput(f"--add-tree {path} does not exist; give RUNS/branched/<name>/metrics.json "
                       "written by `branchnet train`")
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise BadInput(f"--add-tree {path} is not valid JSON; give a metrics.json written by `branchnet train`")
    for key in ("tasks", "val", "flops", "partitions"):
        if key not in metrics:
            raise BadInput(f"--add-tree {path} has no '{key}': it is not a metrics.json of `branchnet train`")
    tree_tasks = list(metrics["tasks"])
    if sorted(tree_tasks) != sorted(tasks):
        raise BadInput(f"--add-tree {path} is for tasks {', '.join(tree_tasks)} but the groupings are for "
                       f"{', '.join(tasks)}; add a tree trained on the same tasks")
    if metrics.get("backbone") not in (None, backbone) or \
            (metrics.get("image_size") is not None and list(metrics["image_size"]) != list(image_size)):
        raise BadInput(f"--add-tree {path} was trained with backbone {metrics.get('backbone')} at "
                       f"{metrics.get('image_size')}, the groupings use {backbone} at {list(image_size)}; "
                       "its cost would not compare")
    stage_flops = metrics.get("stage_flops")
    if stage_flops is not None and [int(f) for f in stage_flops] != list(costs.widths[1.0].stage_flops):
        raise BadInput(f"--add-tree {path} was trained with another encoder (stage FLOPs {stage_flops} vs "
                       f"{list(costs.widths[1.0].stage_flops)}: another model.width or output_stride); "
                       "its cost would not compare")
    losses = {}
    for task in tree_tasks:
        value = (metrics["val"].get(task) or {}).get("loss") if isinstance(metrics["val"], dict) else None
        if not isinstance(value, (int, float)):
            raise BadInput(f"--add-tree {path} has no validation loss for '{task}' (val.{task}.loss)")
        losses[task] = float(value)
    name = f"branched/{metrics.get('name') or path.parent.name}"
    tree = {"tasks": tree_tasks, "partitions": metrics["partitions"], "params": metrics.get("params"),
            "flops": metrics["flops"]}
    candidate = tree_candidate(tree, losses, reference_flops=costs.reference_flops, name=name)
    return TreeRun(path, candidate, metrics)


@dataclass
class GroupingsResult:
    """What :func:`run_groupings` did.

    Attributes:
        table: the candidates (also written to ``csv_path``).
        rows: one dict per candidate, in table order, as in ``json_path``: ``name``,
            ``kind`` (trained / predicted / tree), ``status`` (trained now, skipped,
            resumed, predicted, added), ``tasks``, ``width``, ``cost``, ``flops``,
            ``params``, ``val`` and ``test`` metrics per task.
        reference_flops: the cost unit (see the module docstring).
    """

    table: CandidateTable
    rows: list[dict[str, Any]]
    reference_flops: float
    csv_path: Path
    json_path: Path
    schedule: EsaSchedule | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def run_groupings(config: Config, runs: Path, *, max_size: int | None = None, fraction: float = 1.0,
                  widths: Sequence[float] = (1.0,), widths_for: str = "singles",
                  tasks: Sequence[str] | None = None, predict_higher_order: bool = False,
                  add_trees: Sequence[str | Path] = (), resume: bool = False, force: bool = False,
                  quiet: bool = False) -> GroupingsResult:
    """Train the candidate networks and write the candidates CSV and JSON (see the module docstring).

    Every option is checked, every network priced and every existing run and tree
    file examined before anything is trained or written.
    """

    from branchnet.data import build_dataset, prepare_splits, select_tasks
    from branchnet.train.loaders import make_loader

    runs = Path(runs)
    note = (lambda _message: None) if quiet else say
    selected = select_tasks(config, tasks)
    names = [t.name for t in selected]
    by_name = {t.name: t for t in selected}
    max_size, fraction, widths = check_plan(names, max_size, fraction, widths, widths_for, predict_higher_order)
    costs = cost_model(config, selected, widths)
    trees = [read_tree_run(p, names, costs, config.model.backbone, config.image_size) for p in add_trees]
    seen_trees: dict[str, Path] = {}
    for tree in trees:
        if tree.candidate.name in seen_trees:
            raise BadInput(f"--add-tree {tree.path} and {seen_trees[tree.candidate.name]} are both called "
                           f"'{tree.candidate.name}'; add each branched run once")
        seen_trees[tree.candidate.name] = tree.path
    plan = plan_networks(names, max_size, widths, widths_for, predict_higher_order)

    # The schedule depends only on the size of the training split.
    prepare_splits(config, ("train", "val", "test"), names)
    first_train = build_dataset(config, "train", names[:1])
    batches_per_epoch = len(make_loader(first_train, config.train.batch_size, 0, train=True, seed=config.seed))
    schedule = esa_schedule(len(first_train), batches_per_epoch, config.train.epochs, fraction,
                            config.train.batch_size, dist_utils.world_size())
    plans = {net.name: plan_network(network_dir(runs, net), network_fingerprint(config, net, schedule),
                                    f"groupings/{net.name}", force=force, resume=resume) for net in plan}
    out_root = groupings_dir(runs)
    if dist_utils.is_main():
        ensure_writable_dir(out_root)
    if schedule.subset:
        note(f"groupings: early-stopping approximation: {schedule.steps} of {schedule.full_steps} steps "
             f"({schedule.epochs} epoch(s) x {schedule.batches} batches over {schedule.train_images} images)")

    metrics_of: dict[str, dict[str, Any]] = {}
    status: dict[str, str] = {}
    for index, net in enumerate(plan, start=1):
        step = plans[net.name]
        out_dir = step.directory
        label = f"groupings/{net.name}"
        if step.note:
            note(step.note)
        if step.action != "reuse":
            with claim_network(step, label, force=force, resume=resume) as step:
                if step.action != "reuse":
                    metrics_of[net.name] = _train_candidate(config, net, by_name, step, schedule, quiet,
                                                            f"{label} ({index}/{len(plan)})")
                    status[net.name] = "resumed" if step.action == "resume" else "trained"
                    note(f"{label}: val loss " + ", ".join(f"{t} {metrics_of[net.name]['val'][t]['loss']:.4g}"
                                                           for t in net.tasks))
                    continue
        metrics_of[net.name] = read_metrics(out_dir, label, "pass --force to retrain it")
        status[net.name] = "skipped"

    # The table: trained networks, then HOA predictions, then trees.
    rows: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    for net in plan:
        metrics = metrics_of[net.name]
        try:
            losses = {t: float(metrics["val"][t]["loss"]) for t in net.tasks}
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{network_dir(runs, net) / 'metrics.json'} has no validation loss for every task "
                           f"of {net.name}; pass --force to retrain it") from None
        cost = costs.cost(net.tasks, net.width)
        candidates.append(Candidate(net.name, cost, losses))
        rows.append({"name": net.name, "kind": "trained", "status": status[net.name], "tasks": list(net.tasks),
                     "width": net.width, "cost": cost, "flops": costs.flops(net.tasks, net.width),
                     "params": costs.params(net.tasks, net.width), "val": {t: metrics["val"][t] for t in net.tasks},
                     "test": {t: (metrics.get("test") or {}).get(t) for t in net.tasks},
                     "path": str(network_dir(runs, net))})
    table = CandidateTable(tuple(names), tuple(candidates))
    if predict_higher_order:
        table, predicted_rows = _predict_higher_order(table, plan, names, max_size, widths, widths_for, costs)
        rows.extend(predicted_rows)
    for tree in trees:
        table = table.with_candidates([tree.candidate])
        m = tree.metrics
        rows.append({"name": tree.candidate.name, "kind": "tree", "status": "added", "tasks": list(m["tasks"]),
                     "width": 1.0, "cost": tree.candidate.cost, "flops": int(m["flops"]), "params": m.get("params"),
                     "val": {t: m["val"][t] for t in m["tasks"]},
                     "test": {t: (m.get("test") or {}).get(t) for t in m["tasks"]},
                     "partitions": m["partitions"], "path": str(tree.path)})

    csv_path = out_root / CANDIDATES_CSV
    json_path = out_root / CANDIDATES_JSON
    document = {
        "tasks": names, "reference_flops": costs.reference_flops,
        "cost": "per-image FLOPs / reference_flops; reference_flops = mean per-image FLOPs of the full-width "
                "single-task networks of the tasks",
        "backbone": config.model.backbone, "model_width": config.model.width, "image_size": list(config.image_size),
        "fraction": schedule.fraction, "steps": schedule.steps, "full_steps": schedule.full_steps,
        "train_images": schedule.train_images, "widths": list(widths), "widths_for": widths_for,
        "predict_higher_order": predict_higher_order, "candidates": rows,
    }
    if dist_utils.is_main():
        write_candidates(csv_path, table)
        atomic_write_json(json_path, document)
    dist_utils.barrier()
    return GroupingsResult(table, rows, costs.reference_flops, csv_path, json_path, schedule,
                           {name: step.fingerprint for name, step in plans.items()})


def _train_candidate(config: Config, net: Network, by_name: dict[str, Any], step: Any, schedule: EsaSchedule,
                     quiet: bool, label: str) -> dict[str, Any]:
    """Train and commit one candidate network (its lock held); returns its metrics."""
    import torch

    from branchnet.data import build_dataset
    from branchnet.nn import NUM_STAGES, BranchedNet
    from branchnet.train.engine import fit
    from branchnet.tree import shared_partitions

    cfg = scaled_config(config, net.width)
    group_tasks = [by_name[t] for t in net.tasks]
    torch.manual_seed(config.seed)
    model = BranchedNet(group_tasks, shared_partitions(list(net.tasks), NUM_STAGES), cfg.model, cfg.image_size)
    splits = {split: build_dataset(cfg, split, list(net.tasks)) for split in ("train", "val", "test")}
    train_set = train_subset(splits["train"], schedule.train_images, config.seed) if schedule.subset \
        else splits["train"]
    result = fit(model, group_tasks, cfg, step.directory, train_set, splits["val"], splits["test"],
                 resume=step.action == "resume", quiet=quiet, label=label, epochs=schedule.epochs,
                 fingerprint=step.fingerprint)
    metrics = network_metrics(model, result, cfg, name=net.name, group=list(net.tasks), width=net.width,
                              model_width=cfg.model.width, fraction=schedule.fraction, steps=schedule.steps,
                              full_steps=schedule.full_steps, train_images=schedule.train_images)
    commit_network(step.directory, model, cfg, "candidate", step.fingerprint, metrics,
                   {"group": list(net.tasks), "width": net.width})
    return metrics


def _predict_higher_order(table: CandidateTable, plan: Sequence[Network], names: Sequence[str], max_size: int,
                          widths: Sequence[float], widths_for: str, costs: CostModel
                          ) -> tuple[CandidateTable, list[dict[str, Any]]]:
    """Add the HOA groups of 3..max_size tasks for every width whose pairs were trained."""
    rows: list[dict[str, Any]] = []
    extra: list[Candidate] = []
    for width in widths:
        if width != 1.0 and widths_for != "all":
            continue
        nets = [net for net in plan if net.width == width]
        sub = CandidateTable(tuple(names), tuple(table.candidate(net.name) for net in nets))
        filled = higher_order_approximation(sub, max_size, group_cost=lambda g, w=width: costs.cost(g, w))
        for cand in filled.candidates[len(nets):]:
            group = tuple(cand.losses)
            group = tuple(t for t in names if t in group)
            name = group_name(group, width)
            extra.append(Candidate(name, cand.cost, cand.losses))
            rows.append({"name": name, "kind": "predicted", "status": "predicted", "tasks": list(group),
                         "width": width, "cost": cand.cost, "flops": costs.flops(group, width),
                         "params": costs.params(group, width),
                         "val": {t: {"loss": cand.losses[t]} for t in group}, "test": None,
                         "predicted_from": [group_name(p, width) for p in itertools.combinations(group, 2)]})
    return table.with_candidates(extra), rows


def train_groupings(config: Config, runs: Path, *, max_size: int | None = None, fraction: float = 1.0,
                    widths: Sequence[float] = (1.0,), widths_for: str = "singles",
                    tasks: Sequence[str] | None = None, predict_higher_order: bool = False,
                    add_trees: Sequence[str | Path] = (), resume: bool = False, force: bool = False,
                    quiet: bool = False) -> CandidateTable:
    """Train the candidate networks of Standley et al. Sec. 3.1 and return the candidates table.

    Args:
        config: the experiment (dataset, tasks, encoder, training settings).
        runs: the experiment directory; runs go to ``runs/groupings/<name>/`` and the
            tables to ``runs/groupings/candidates.csv`` and ``candidates.json``.
        max_size: the largest group K (default: all tasks, 2^N - 1 groups).
        fraction: share of the configured optimiser steps, in (0, 1] (0.2: ESA).
        widths: encoder width factors (on ``model.width``), 1 among them.
        widths_for: ``"singles"`` (other widths for single-task networks, as the paper)
            or ``"all"`` (for every trained group).
        tasks: a subset of the config's tasks (default: all).
        predict_higher_order: train groups of one and two tasks only and predict groups
            of 3..K with the HOA.
        add_trees: ``branchnet train`` metrics.json files of branched networks to add
            as candidates (named ``branched/<name>``).
        resume: continue interrupted networks from their last epoch.
        force: retrain networks already trained.
        quiet: no progress bars.

    Returns:
        The :class:`CandidateTable` written to ``candidates.csv``.
    """
    return run_groupings(config, runs, max_size=max_size, fraction=fraction, widths=widths, widths_for=widths_for,
                         tasks=tasks, predict_higher_order=predict_higher_order, add_trees=add_trees,
                         resume=resume, force=force, quiet=quiet).table

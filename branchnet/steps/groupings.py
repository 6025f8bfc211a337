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

Runs go to ``<runs>/groupings/<name>/`` (``model.pt``, ``metrics.json``,
``settings.json``) where ``name`` is :func:`~branchnet.selection.group_name`
(``seg+depth``, ``seg@0.5``). The tables go to ``<runs>/groupings/candidates.csv``
(DESIGN.md format: ``name,cost,<task>...``, each cell the network's validation loss on
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
:func:`esa_schedule`. Higher-order approximation (HOA, Sec. 3.3.2): groups of three or
more tasks are predicted from the pair networks by
:func:`~branchnet.selection.higher_order_approximation`, at the cost their network
would have.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branchnet.train import distributed as dist_utils
from branchnet.config import Config
from branchnet.errors import BadInput
from branchnet.atomic import atomic_write_json, ensure_writable_dir
from branchnet.progress import say
from branchnet.selection import (Candidate, CandidateTable, group_name, higher_order_approximation,
                                 tree_candidate, write_candidates)

GROUPINGS_DIR = "groupings"
CANDIDATES_CSV = "candidates.csv"
CANDIDATES_JSON = "candidates.json"
WIDTHS_FOR = ("singles", "all")


# ---------------------------------------------------------------------------------
# What to train


@dataclass(frozen=True)
class Network:
    """One candidate network: a group of tasks sharing an encoder of relative width ``width``."""

    tasks: tuple[str, ...]
    width: float = 1.0

    @property
    def name(self) -> str:
        return group_name(self.tasks, self.width)


def groupings_dir(runs: Path) -> Path:
    return Path(runs) / GROUPINGS_DIR


def network_dir(runs: Path, network: Network) -> Path:
    return groupings_dir(runs) / network.name


def validate_widths(widths: Sequence[float]) -> tuple[float, ...]:
    """``widths`` as floats, checked: each in (0, 1], no repeats, 1 among them.

    Raises BadInput naming the offending value.
    """
    out: list[float] = []
    for w in widths:
        try:
            value = float(w)
        except (TypeError, ValueError):
            raise BadInput(f"--widths: '{w}' is not a number; give factors in (0, 1], e.g. --widths 1,0.5") from None
        if not math.isfinite(value) or not 0 < value <= 1:
            raise BadInput(f"--widths: {w} is not in (0, 1]; a width is a factor on model.width, e.g. 0.5")
        if value in out:
            raise BadInput(f"--widths gives {value:g} twice; give each width once, e.g. --widths 1,0.5")
        out.append(value)
    if 1.0 not in out:
        raise BadInput(f"--widths {','.join(f'{w:g}' for w in out)} must include 1 (the full-width networks, "
                       "the cost reference), e.g. --widths 1,0.5")
    return tuple(out)


def parse_widths(text: str) -> tuple[float, ...]:
    """``"1,0.5"`` -> ``(1.0, 0.5)`` (see :func:`validate_widths`)."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise BadInput(f"--widths '{text}' must be a comma-separated list of factors in (0, 1], e.g. 1,0.5")
    values = []
    for p in parts:
        try:
            values.append(float(p))
        except ValueError:
            raise BadInput(f"--widths '{text}': '{p}' is not a number; give factors in (0, 1], e.g. 1,0.5") from None
        if not math.isfinite(values[-1]) or not 0 < values[-1] <= 1:
            raise BadInput(f"--widths '{text}': {p} is not in (0, 1]; a width is a factor on model.width, e.g. 0.5")
    return validate_widths(values)


def plan_networks(tasks: Sequence[str], max_size: int | None = None, widths: Sequence[float] = (1.0,),
                  widths_for: str = "singles", predict_higher_order: bool = False) -> list[Network]:
    """The networks to train, in the order of the candidates CSV.

    Width 1 first (groups by size, then in task order, as ``itertools.combinations``),
    then each other width in the order given.
    """
    n = len(tasks)
    max_size = n if max_size is None else max_size
    trained_size = min(max_size, 2) if predict_higher_order else max_size
    groups = [g for size in range(1, trained_size + 1) for g in itertools.combinations(tasks, size)]
    out = [Network(tuple(g), 1.0) for g in groups]
    for w in widths:
        if w != 1.0:
            out.extend(Network(tuple(g), w) for g in groups if widths_for == "all" or len(g) == 1)
    return out


def check_plan(tasks: Sequence[str], max_size: int | None, fraction: float, widths: Sequence[float],
               widths_for: str, predict_higher_order: bool) -> tuple[int, float, tuple[float, ...]]:
    """Validate the options; returns (max_size, fraction, widths)."""
    n = len(tasks)
    if max_size is None:
        max_size = n
    if isinstance(max_size, bool) or int(max_size) != max_size or not 1 <= max_size <= n:
        raise BadInput(f"--max-size {max_size} must be an integer from 1 to {n} (the number of tasks: "
                       f"{', '.join(tasks)})")
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise BadInput(f"--fraction '{fraction}' is not a number; give a value in (0, 1], e.g. 0.2") from None
    if not math.isfinite(fraction) or not 0 < fraction <= 1:
        raise BadInput(f"--fraction {fraction:g} must be in (0, 1]: the share of the configured training "
                       "steps (1 = full training, 0.2 = the early-stopping approximation)")
    widths = validate_widths(widths)
    if widths_for not in WIDTHS_FOR:
        raise BadInput(f"--widths-for '{widths_for}' must be one of: {', '.join(WIDTHS_FOR)}")
    if predict_higher_order and (n < 3 or max_size < 3):
        raise BadInput(f"--predict-higher-order fills groups of 3 or more tasks, but there are {n} tasks and "
                       f"--max-size is {max_size}; drop it or raise --max-size to at least 3")
    return int(max_size), fraction, widths


# ---------------------------------------------------------------------------------
# Costs


def scaled_config(config: Config, width: float) -> Config:
    """``config`` with the encoder ``width`` times as wide (``model.width * width``)."""
    if width == 1.0:
        return config
    model = dataclasses.replace(config.model, width=config.model.width * width)
    return dataclasses.replace(config, model=model)


@dataclass(frozen=True)
class WidthCosts:
    """Per-image FLOPs and params of the parts of the networks at one width.

    ``stage_flops``/``stage_params``: one copy of each encoder stage (D,);
    ``head_flops``/``head_params``: ``{task: value}``.
    """

    width: float
    stage_flops: tuple[int, ...]
    stage_params: tuple[int, ...]
    head_flops: dict[str, int]
    head_params: dict[str, int]

    def flops(self, tasks: Sequence[str]) -> int:
        """Per-image FLOPs of the network of ``tasks``: the encoder once, one head per task."""
        return int(sum(self.stage_flops) + sum(self.head_flops[t] for t in tasks))

    def params(self, tasks: Sequence[str]) -> int:
        return int(sum(self.stage_params) + sum(self.head_params[t] for t in tasks))


@dataclass(frozen=True)
class CostModel:
    """Costs of every group network at every width, and the reference they are relative to."""

    tasks: tuple[str, ...]
    widths: dict[float, WidthCosts]

    @property
    def reference_flops(self) -> float:
        """Mean per-image FLOPs of the full-width single-task networks of ``tasks``."""
        full = self.widths[1.0]
        return math.fsum(full.flops([t]) for t in self.tasks) / len(self.tasks)

    def flops(self, tasks: Sequence[str], width: float = 1.0) -> int:
        return self.widths[width].flops(tasks)

    def params(self, tasks: Sequence[str], width: float = 1.0) -> int:
        return self.widths[width].params(tasks)

    def cost(self, tasks: Sequence[str], width: float = 1.0) -> float:
        """``flops(tasks, width) / reference_flops`` (1 = one standard network)."""
        return self.flops(tasks, width) / self.reference_flops


def cost_model(config: Config, tasks: Sequence[Any], widths: Sequence[float]) -> CostModel:
    """Measure stage and head costs at each width from one all-shared network of ``tasks``.

    A group's network is the all-shared tree of the group, whose FLOPs are the stages'
    plus its heads' (a head sees the same features whatever the group), so one model per
    width prices every group. Raises BadInput when the backbone cannot take a width
    (HRNet has no width multiplier), naming the width.
    """
    from branchnet.nn.backbones import NUM_STAGES
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import shared_partitions

    names = [t.name for t in tasks]
    out: dict[float, WidthCosts] = {}
    for width in widths:
        cfg = scaled_config(config, width)
        try:
            model = BranchedNet(list(tasks), shared_partitions(names, NUM_STAGES), cfg.model, cfg.image_size)
        except BadInput as exc:
            if width == 1.0:
                raise
            raise BadInput(f"--widths {width:g} (model.width {cfg.model.width:g}): {exc}") from None
        costs = model.costs()
        out[float(width)] = WidthCosts(float(width), tuple(costs["stage_flops"]), tuple(costs["stage_params"]),
                                       dict(costs["head_flops"]), dict(costs["head_params"]))
    return CostModel(tuple(names), out)


# ---------------------------------------------------------------------------------
# The early-stopping approximation


@dataclass(frozen=True)
class EsaSchedule:
    """How long each network trains (Sec. 3.3.1, the early-stopping approximation).

    Attributes:
        fraction: the share F of the configured optimiser steps.
        full_steps: configured steps, ``epochs x batches_per_epoch`` on the whole split.
        epochs: epochs actually run, ``ceil(target / batches_per_epoch)``.
        batches: batches per epoch actually run.
        train_images: images per epoch (the whole split, or a fixed random subset of
            ``batches x batch_size x world_size`` images).
        steps: ``epochs x batches``: ``round(F x full_steps)`` (at least 1) to within
            ``epochs - 1`` steps above.
        subset: True when a subset of the training split is used.
    """

    fraction: float
    full_steps: int
    epochs: int
    batches: int
    train_images: int
    steps: int
    subset: bool


def esa_schedule(n_train: int, batches_per_epoch: int, epochs: int, fraction: float, batch_size: int,
                 world_size: int = 1) -> EsaSchedule:
    """The schedule that runs ``fraction`` of ``epochs x batches_per_epoch`` optimiser steps.

    Target ``S = max(1, round(F x full_steps))`` steps. They are run as
    ``E = ceil(S / batches_per_epoch)`` epochs of ``ceil(S / E)`` batches over a fixed
    random subset of the training split (the same subset for every network), so each
    image is seen at most once more often than when stopping the full schedule early,
    and the learning-rate schedule runs its whole course over the shortened run (each
    candidate is a finished short training, not a snapshot with a high learning rate).
    ``fraction = 1`` is exactly the configured training on the whole split.
    """
    full = epochs * batches_per_epoch
    if fraction >= 1.0:
        return EsaSchedule(1.0, full, epochs, batches_per_epoch, n_train, full, False)
    target = max(1, math.floor(fraction * full + 0.5))
    run_epochs = math.ceil(target / batches_per_epoch)
    batches = math.ceil(target / run_epochs)
    if batches >= batches_per_epoch:
        return EsaSchedule(fraction, full, run_epochs, batches_per_epoch, n_train, run_epochs * batches_per_epoch,
                           False)
    images = batches * batch_size * world_size
    return EsaSchedule(fraction, full, run_epochs, batches, images, run_epochs * batches, True)


def train_subset(dataset, size: int, seed: int):
    """A fixed random subset of ``size`` items of ``dataset`` (the same for a given seed)."""
    import torch
    from torch.utils.data import Subset

    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, sorted(order[:size].tolist()))


# ---------------------------------------------------------------------------------
# Settings a finished run must share to be reused


def network_settings(config: Config, network: Network, schedule: EsaSchedule) -> dict[str, Any]:
    """What decides a candidate network's training: compared before reusing a run.

    The config minus what does not change the result (device, evaluation frequency,
    loader workers, dataset location) and minus tasks outside the group.
    """
    d = config.to_dict()
    train = {k: v for k, v in d["train"].items() if k not in ("device", "eval_every")}
    data = {k: v for k, v in d["data"].items() if k not in ("workers", "root")}
    entries = {e["name"]: e for e in d["tasks"]}
    return {
        "tasks": list(network.tasks), "width": network.width, "model_width": config.model.width * network.width,
        "fraction": schedule.fraction, "epochs": schedule.epochs, "steps": schedule.steps,
        "train_images": schedule.train_images,
        "config": {"seed": d["seed"], "data": data, "model": d["model"], "train": train,
                   "task_entries": [entries[t] for t in network.tasks]},
    }


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_trained(directory: Path) -> bool:
    return (directory / "model.pt").is_file() and (directory / "metrics.json").is_file()


def check_existing(directory: Path, name: str, settings: dict[str, Any], *, resume: bool, force: bool) -> str:
    """``"trained"`` (reuse), ``"resume"``, or ``"train"``; BadInput when a run would be reused wrongly."""
    if force:
        return "resume" if resume and (directory / "checkpoint.pt").is_file() else "train"
    old = _read_json(directory / "settings.json")
    if is_trained(directory):
        if old is None:
            raise BadInput(f"{directory} holds a trained network without settings.json; pass --force to retrain it "
                           "or use another --runs")
        diff = _differences(old, settings)
        if diff:
            raise BadInput(f"{directory} was trained with other settings ({'; '.join(diff[:3])}); "
                           "pass --force to retrain it or use another --runs")
        return "trained"
    if resume and (directory / "checkpoint.pt").is_file():
        if old is not None and _differences(old, settings):
            diff = _differences(old, settings)
            raise BadInput(f"{directory} was started with other settings ({'; '.join(diff[:3])}); "
                           "drop --resume to start it over")
        return "resume"
    return "train"


# ---------------------------------------------------------------------------------
# Branched trees as candidates


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
    metrics = _read_json(path)
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


# ---------------------------------------------------------------------------------
# The step


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
    import torch

    from branchnet.nn.backbones import NUM_STAGES
    from branchnet.nn.model_file import save_model
    from branchnet.data import build_dataset
    from branchnet.train.engine import fit, make_loader
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import shared_partitions
    from branchnet.steps.train_single import model_metrics, prepare_data, select_tasks

    runs = Path(runs)
    note = (lambda _message: None) if quiet else say
    selected = select_tasks(config, tasks)
    if len({t.name for t in selected}) != len(selected):
        raise BadInput("--task names a task twice; give each task once")
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
    prepare_data(config, ("train", "val", "test"), names)
    first_train = build_dataset(config, "train", names[:1])
    batches_per_epoch = len(make_loader(first_train, config.train.batch_size, 0, train=True, seed=config.seed))
    schedule = esa_schedule(len(first_train), batches_per_epoch, config.train.epochs, fraction,
                            config.train.batch_size, dist_utils.world_size())
    settings = {net.name: network_settings(config, net, schedule) for net in plan}
    actions = {net.name: check_existing(network_dir(runs, net), net.name, settings[net.name],
                                        resume=resume, force=force) for net in plan}
    out_root = groupings_dir(runs)
    if dist_utils.is_main():
        ensure_writable_dir(out_root)
    if schedule.subset:
        note(f"groupings: early-stopping approximation: {schedule.steps} of {schedule.full_steps} steps "
            f"({schedule.epochs} epoch(s) x {schedule.batches} batches over {schedule.train_images} images)")

    metrics_of: dict[str, dict[str, Any]] = {}
    status: dict[str, str] = {}
    for index, net in enumerate(plan, start=1):
        out_dir = network_dir(runs, net)
        label = f"groupings/{net.name}"
        if actions[net.name] == "trained":
            note(f"{label}: already trained, skipped (--force retrains)")
            metrics_of[net.name] = _read_json(out_dir / "metrics.json") or {}
            status[net.name] = "skipped"
            continue
        if dist_utils.is_main():
            ensure_writable_dir(out_dir)
            if actions[net.name] == "train":
                (out_dir / "checkpoint.pt").unlink(missing_ok=True)
            atomic_write_json(out_dir / "settings.json", settings[net.name])
        dist_utils.barrier()
        cfg = scaled_config(config, net.width)
        group_tasks = [by_name[t] for t in net.tasks]
        torch.manual_seed(config.seed)
        model = BranchedNet(group_tasks, shared_partitions(list(net.tasks), NUM_STAGES), cfg.model, cfg.image_size)
        splits = {split: build_dataset(cfg, split, list(net.tasks)) for split in ("train", "val", "test")}
        train_set = train_subset(splits["train"], schedule.train_images, config.seed) if schedule.subset \
            else splits["train"]
        result = fit(model, group_tasks, cfg, out_dir, train_set, splits["val"], splits["test"],
                     resume=actions[net.name] == "resume", quiet=quiet, label=f"{label} ({index}/{len(plan)})",
                     epochs=schedule.epochs)
        metrics = model_metrics(model, None, result, cfg)
        metrics.update({"name": net.name, "group": list(net.tasks), "width": net.width,
                        "model_width": cfg.model.width, "fraction": schedule.fraction, "steps": schedule.steps,
                        "full_steps": schedule.full_steps, "train_images": schedule.train_images})
        if dist_utils.is_main():
            save_model(out_dir / "model.pt", model, cfg, "candidate", {"group": list(net.tasks), "width": net.width})
            atomic_write_json(out_dir / "metrics.json", metrics)
            (out_dir / "checkpoint.pt").unlink(missing_ok=True)
        dist_utils.barrier()
        metrics_of[net.name] = metrics
        status[net.name] = "resumed" if actions[net.name] == "resume" else "trained"
        note(f"{label}: val loss " + ", ".join(f"{t} {metrics['val'][t]['loss']:.4g}" for t in net.tasks)
            + f" ({result.seconds:.0f}s)")

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
    return GroupingsResult(table, rows, costs.reference_flops, csv_path, json_path, schedule, settings)


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

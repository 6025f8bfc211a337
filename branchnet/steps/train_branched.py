"""Step 4 of the pipeline: train a branched network from a tree (``branchnet train``).

``tree`` is a ``tree.json`` from ``branchnet build`` (or written by hand: only tasks,
locations and partitions are needed), or ``shared`` (one group at every stage: the usual
multi-task baseline) or ``separate`` (one branch per task from the root: the single-task
networks side by side). Writes ``<runs>/branched/<name>/`` (:mod:`branchnet.runs`) with
per-task metrics, params, FLOPs and the multi-task delta against the single-task models.

The fair protocol is the default (``branched.init: random``): the branched network starts
from the same random encoder as the single-task models (same seed) and trains with the
same schedule, as the papers train every network. With ``init: first`` or ``average`` it
starts from the trained single-task weights and trains the full schedule again, so its
Δ_MTL compares networks trained longer than their baselines; metrics.json and the report
say so beside every Δ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from branchnet.atomic import load_checkpoint
from branchnet.config import Config
from branchnet.data import build_dataset, build_tasks, prepare_splits
from branchnet.errors import BadInput
from branchnet.nn import NUM_STAGES, BranchedNet
from branchnet.progress import say
from branchnet.runs import (MODEL_FILE, Baselines, branched_dir, claim_network, find_baselines, fingerprint,
                            Plan, network_metrics, plan_network, read_metrics)
from branchnet.steps.commit import commit_network
from branchnet.tasks import multi_task_delta
from branchnet.train.engine import fit
from branchnet.train.hooks import config_hooks
from branchnet.train.roaming import roaming_config, roaming_metrics
from branchnet.tree import Partitions, load_tree, separate_partitions, shared_partitions

TREE_NAMES = ("shared", "separate")


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


def delta_protocol(config: Config, baselines: Baselines) -> tuple[str, list[str]]:
    """How a Δ_MTL was obtained: ``("fair" | "init-from-single" | "named-baselines", notes)``.

    Fair: same init and schedule as baselines trained with the same settings. Every other
    case carries a note in plain words, written beside the Δ in metrics.json and the report.
    """
    notes = []
    protocol = "fair"
    if config.branched.init != "random":
        protocol = "init-from-single"
        notes.append(f"branched.init={config.branched.init}: the network started from the trained single-task "
                     "weights and trained the full schedule again, so its Δ_MTL compares networks trained longer "
                     "than their baselines (the fair protocol is branched.init: random)")
    if not baselines.matched:
        protocol = "named-baselines" if protocol == "fair" else protocol
        differs = "; ".join(f"{t}: {d}" for t, d in baselines.differences.items())
        notes.append(f"Δ_MTL is against the named baselines {baselines.source}, trained with other settings ({differs})")
    return protocol, notes


def branched_fingerprint(config: Config, partitions: Partitions, baselines: Baselines) -> dict[str, Any]:
    """The fingerprint of a branched network: the training settings, its tasks and tree, its init,
    and (when it starts from them) the single-task weights it starts from."""
    start = {"init": config.branched.init}
    if config.branched.init != "random":
        start["init_from"] = dict(baselines.records)
    return fingerprint("branched", config, config.task_names, partitions=partitions, **start)


def check_branched(config: Config, runs: Path, partitions: Partitions, name: str, *, resume: bool = False,
                   force: bool = False, quiet: bool = False, baselines: str | Path | None = None,
                   allow_plain: bool = False) -> tuple[Config, Baselines, Plan]:
    """Every check of :func:`train_branched` before it trains ``<runs>/branched/<name>`` (the tree of
    ``partitions``), writing nothing: the name, the settings that only a branched network has
    (``train.roaming`` needs a shared node, ``gradnorm`` a first stage shared by all tasks), the
    baselines and the reuse rule. Returns the config the network trains with, its baselines and
    its plan. ``branchnet run`` calls it for its three networks before it writes its affinity and tree."""
    if not name or "/" in name or name in (".", ".."):
        raise BadInput(f"--name '{name}' must be a plain directory name (no '/'), e.g. --name mytree")
    config = roaming_config(config, partitions, allow_plain=allow_plain, label=f"branched/{name}", quiet=quiet)
    if config.train.weighting == "gradnorm" and len(partitions[0]) != 1:
        raise BadInput(f"gradnorm weighting needs a layer shared by all tasks; the tree of branched/{name} splits "
                       "tasks at the first stage (use uniform, uncertainty or dwa)")
    found = find_baselines(config, runs, config.task_names, baselines)  # fail before training
    fp = branched_fingerprint(config, partitions, found)
    plan = plan_network(branched_dir(runs, name), fp, f"branched/{name}", force=force, resume=resume)
    return config, found, plan


def train_branched(config: Config, runs: Path, tree: str | Path, *, name: str | None = None,
                   resume: bool = False, force: bool = False, quiet: bool = False,
                   baselines: str | Path | None = None, allow_plain: bool = False) -> dict[str, Any]:
    """Train the branched network of ``tree`` (reusing it when trained with the same settings);
    returns its metrics (also in ``<runs>/branched/<name>/metrics.json``).

    ``baselines`` names another run directory whose single-task models the Δ_MTL is
    computed against, whatever their settings (recorded as such); by default the run's own
    single-task models are used and must have been trained with the same settings.
    With ``train.roaming`` the network trains with Maximum Roaming (:mod:`branchnet.train.roaming`);
    a tree without a node shared by two or more tasks is then a :class:`BadInput` unless
    ``allow_plain``, which trains it plainly (and fingerprints it as the plain network).
    """
    runs = Path(runs)
    partitions, default_name, tree_info = resolve_tree(tree, config)
    name = name or default_name
    config, found, plan = check_branched(config, runs, partitions, name, resume=resume, force=force, quiet=quiet,
                                         baselines=baselines, allow_plain=allow_plain)
    if plan.note and not quiet:
        say(plan.note)
    if plan.action == "reuse":
        return read_metrics(plan.directory, f"branched/{name}", "retrain it with --force")
    tasks = build_tasks(config)
    model = build_branched(config, tasks, partitions, tree_info)
    prepare_splits(config, ("train", "val", "test"))
    with claim_network(plan, f"branched/{name}", force=force, resume=resume) as plan:
        if plan.action == "reuse":
            return read_metrics(plan.directory, f"branched/{name}", "retrain it with --force")
        if config.branched.init != "random":
            source = Path(found.source)  # the baselines' directory: the weights recorded in the fingerprint
            states = {t: load_checkpoint(source / t / MODEL_FILE)["state_dict"] for t in model.task_names}
            model.init_from_single(states, config.branched.init)
        splits = {split: build_dataset(config, split) for split in ("train", "val", "test")}
        result = fit(model, tasks, config, plan.directory, splits["train"], splits["val"], splits["test"],
                     resume=plan.action == "resume", quiet=quiet, label=f"branched/{name}", fingerprint=plan.fingerprint,
                     hooks=config_hooks(config))
        protocol, notes = delta_protocol(config, found)
        delta: dict[str, Any] = {
            split: multi_task_delta(getattr(result, split), {t: b[split][t] for t, b in found.metrics.items()},
                                    tasks)
            for split in ("val", "test")
        }
        delta.update(protocol=protocol, notes=notes, baselines=found.describe())
        metrics = network_metrics(model, result, config, name=name, tree=tree_info, init=config.branched.init,
                                  weighting=config.train.weighting, delta_mtl=delta,
                                  roaming=roaming_metrics(config, model))
        commit_network(plan.directory, model, config, "branched", plan.fingerprint, metrics, {"tree": tree_info})
    test = metrics["delta_mtl"]["test"]["delta_mtl"]
    say(f"branched/{name}: test delta_mtl = {test:+.2f}%" + (" (" + protocol + ")" if protocol != "fair" else "")
        + f" ({metrics['params'] / 1e6:.2f}M params, {metrics['flops'] / 1e9:.3f} GFLOPs)")
    return metrics


def build_branched(config: Config, tasks: list, partitions: Partitions, tree_info: dict[str, Any]) -> BranchedNet:
    """The branched network of ``partitions`` from the config's seed (the single-task models' encoder
    init); a tree.json that records its params must count the same."""
    torch.manual_seed(config.seed)
    model = BranchedNet(tasks, partitions, config.model, config.image_size)
    if tree_info.get("params") and tree_info.get("backbone"):
        params = sum(p.numel() for p in model.parameters())
        if int(tree_info["params"]) != params:
            raise BadInput(f"tree {tree_info['path']} counts {tree_info['params']} parameters but this config's "
                           f"network has {params}: it was built for other heads or another input size; "
                           "rebuild it from this run's affinity.npz")
    return model

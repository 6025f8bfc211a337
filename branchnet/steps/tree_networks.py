"""One branched network of a tree at an evaluation seed, trained through the run store.

What ``branchnet evaluate`` (its study networks) and ``branchnet search`` (its proposals) train:
the branched network of a tree with the config's ``seed + s``
(:func:`branchnet.runs.evaluation_config`), fingerprinted as the run's branched network plus
the evaluation seed (:func:`branchnet.runs.evaluation_fingerprint`), its Δ_MTL against the run's
single-task baselines (docs/evaluate.md, "Seeds"), committed by
:func:`branchnet.steps.commit.commit_network` without curves.png (drawn on demand:
:func:`branchnet.steps.commit.draw_curves`, ``--curves``). The two commands differ only in where the network lives
and what its metrics.json says about why it was trained (``tree``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from branchnet.config import Config
from branchnet.runs import (MODEL_FILE, Baselines, Plan, evaluation_config, evaluation_fingerprint,
                            network_metrics)
from branchnet.steps.commit import commit_network
from branchnet.tree.record import Partitions


def tree_network_fingerprint(config: Config, partitions: Partitions, baselines: Baselines, seed: int) -> dict[str, Any]:
    """The fingerprint of the network of ``partitions`` at evaluation seed ``seed``."""
    from branchnet.steps.train_branched import branched_fingerprint

    return evaluation_fingerprint(branched_fingerprint(config, partitions, baselines), seed)


class SplitCache:
    """The train/val/test splits of the last evaluation seed asked for (the seed sets the
    augmentation draws), so consecutive networks of one seed build them once."""

    def __init__(self) -> None:
        self.cache: dict[int, dict[str, Any]] = {}

    def get(self, config: Config) -> dict[str, Any]:
        from branchnet.data import build_dataset

        if config.seed not in self.cache:
            self.cache = {config.seed: {s: build_dataset(config, s) for s in ("train", "val", "test")}}
        return self.cache[config.seed]


def train_tree_network(config: Config, baselines: Baselines, partitions: Partitions, seed: int, plan: Plan,
                       info: dict[str, Any], *, name: str, datasets: SplitCache | None = None, quiet: bool = False,
                       label: str | None = None) -> dict[str, Any]:
    """Train (or resume, per ``plan``) the network of ``partitions`` with evaluation seed
    ``seed`` into ``plan.directory`` and commit it; returns its metrics.json.

    ``config`` is the run's config (seed 0 is its own seed); ``info`` the tree entry of the
    metrics.json and model.pt (the tree.json object and why it was trained); ``name`` the
    network's name in its metrics. The network's lock is held while it trains
    (:func:`branchnet.runs.claim_network`): a second process on it refuses, naming the holder.
    """
    from branchnet.runs import claim_network, read_metrics

    label = label or name
    with claim_network(plan, f"network {name}", resume=plan.action == "resume") as claimed:
        if claimed.action == "reuse":  # another process finished it meanwhile, with these settings
            return read_metrics(claimed.directory, f"network {name}", "rerun the command with --force")
        return _train_claimed(config, baselines, partitions, seed, claimed, info, name=name, datasets=datasets,
                              quiet=quiet, label=label)


def _train_claimed(config: Config, baselines: Baselines, partitions: Partitions, seed: int, plan: Plan,
                   info: dict[str, Any], *, name: str, datasets: SplitCache | None, quiet: bool,
                   label: str) -> dict[str, Any]:
    """:func:`train_tree_network` once the network's lock is held."""
    from branchnet.atomic import ensure_writable_dir, load_checkpoint
    from branchnet.data import build_tasks
    from branchnet.steps.train_branched import build_branched, delta_protocol
    from branchnet.tasks import multi_task_delta
    from branchnet.train.engine import fit

    trained = evaluation_config(config, seed)
    tasks = build_tasks(trained)
    model = build_branched(trained, tasks, partitions, info)
    if trained.branched.init != "random":
        source = Path(baselines.source)
        states = {t: load_checkpoint(source / t / MODEL_FILE)["state_dict"] for t in model.task_names}
        model.init_from_single(states, trained.branched.init)
    ensure_writable_dir(plan.directory)
    splits = (datasets or SplitCache()).get(trained)
    result = fit(model, tasks, trained, plan.directory, splits["train"], splits["val"], splits["test"],
                 resume=plan.action == "resume", quiet=quiet, label=label, fingerprint=plan.fingerprint)
    protocol, notes = delta_protocol(config, baselines)
    delta: dict[str, Any] = {
        split: multi_task_delta(getattr(result, split), {t: b[split][t] for t, b in baselines.metrics.items()},
                                tasks) for split in ("val", "test")}
    delta.update(protocol=protocol, notes=notes, baselines=baselines.describe())
    metrics = network_metrics(model, result, trained, name=name, tree=info, init=trained.branched.init,
                              weighting=trained.train.weighting, delta_mtl=delta, evaluation_seed=int(seed),
                              trained_seed=trained.seed)
    commit_network(plan.directory, model, trained, "branched", plan.fingerprint, metrics, {"tree": info},
                   curves=False)
    return metrics

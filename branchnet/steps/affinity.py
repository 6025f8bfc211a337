"""Step 2 of the pipeline from trained models: features of the single-task models -> affinity
(RSA, FAFS), or TAG's lookahead measured while the all-shared network trains (:func:`tag_from_runs`).

:class:`ModelFeatureSource` runs the K held-out images of the ``affinity`` split (never
the test split) through each task's single-task model and yields its features at every
branch point; :func:`affinity_from_runs` feeds it to the RSA engine
(:func:`branchnet.rsa.compute_affinity`) and writes ``<runs>/affinity.npz`` with the
stage and head costs of the models, ``affinity.json`` and the figures. With ``epoch`` E the
models are those of epoch E (the weights kept by ``train.keep_checkpoints``), written to
``<runs>/affinity-epoch<E>.npz`` (:func:`branchnet.runs.affinity_path`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from branchnet.affinity.fafs import FAFS
from branchnet.affinity.measure import Measure
from branchnet.affinity.tag import TAG
from branchnet.config import Config, load_config
from branchnet.data import build_dataset
from branchnet.devices import resolve_device
from branchnet.train.acceleration import memory_format, prepare_model
from branchnet.train.loaders import LoaderSettings, make_loader, to_device
from branchnet.errors import BadInput
from branchnet.model_file import load_model
from branchnet.registry import Registry
from branchnet.rsa.affinity import RSA
from branchnet.runs import MODEL_FILE, affinity_path, find_baselines, read_epoch_weights, single_dir


class ModelFeatureSource:
    """Branch-point features of branchnet's single-task models (a ``FeatureSource``).

    Models are loaded one task at a time, so memory holds one model and the feature
    blocks the RSA engine asks for. Images come in the affinity split's order, the same
    for every task. With ``epoch`` E each model carries its weights after epoch E
    (:func:`branchnet.runs.read_epoch_weights`) instead of the final ones. On a GPU the
    features stay there: the engine centres them and forms their Gram products on the device
    (docs/performance.md), nothing is copied to the host but the K x K results.
    """

    def __init__(self, config: Config, runs: Path, images: int | None = None, device: str = "cpu",
                 batch_size: int | None = None, epoch: int | None = None) -> None:
        self.config = config
        self.runs = Path(runs)
        self.epoch = epoch
        self.tasks = config.task_names
        # the reuse rule: only finished models trained with these settings are measured
        self.models = find_baselines(config, self.runs, self.tasks, purpose="an affinity measured from it").records
        self.dataset = build_dataset(config, "affinity", tasks=[])
        self.num_images = min(int(images or config.affinity.images), len(self.dataset))
        self.device = resolve_device(device)
        self.batch_size = batch_size or config.train.batch_size
        first = self.load(self.tasks[0])
        self.locations = list(first.model.layout.locations)
        self.layout = first.model.layout

    def load(self, task: str):
        loaded = load_model(single_dir(self.runs, task) / MODEL_FILE, device=self.device)
        if loaded.model.task_names != [task]:
            raise BadInput(f"{single_dir(self.runs, task) / MODEL_FILE} is not the single-task model of '{task}'")
        if tuple(loaded.model.image_size) != tuple(self.config.image_size):
            raise BadInput(f"the single-task model of '{task}' was trained at {tuple(loaded.model.image_size)} but the "
                           f"config says {tuple(self.config.image_size)}; retrain with `branchnet train-single --force`")
        if hasattr(self, "layout") and loaded.model.layout != self.layout:
            raise BadInput(f"the single-task model of '{task}' has another encoder ({loaded.model.layout.backbone}) "
                           f"than '{self.tasks[0]}' ({self.layout.backbone}); retrain them with the same config")
        if self.epoch is not None:
            state = read_epoch_weights(single_dir(self.runs, task), self.epoch, f"the single-task model of '{task}'")
            loaded.model.load_state_dict({k: v.to(self.device) for k, v in state.items()})
        return loaded

    def loader_settings(self) -> LoaderSettings:
        """``data.workers`` and ``data.loader`` of the config on this source's device."""
        return LoaderSettings.resolve(self.config.data, self.device)

    def batches(self, task: str, locations: Sequence[int]) -> Iterator[list[Any]]:
        model = prepare_model(self.load(task).model.eval(), self.device)
        layout = memory_format(self.device)
        depth = max(locations)
        loader = make_loader(torch.utils.data.Subset(self.dataset, range(self.num_images)), self.batch_size,
                             self.loader_settings(), train=False, device=self.device, shard=False)
        with torch.no_grad():
            for images, _ in loader:
                levels = model.forward_levels(to_device(images, self.device, layout), depth=depth)
                yield [levels[d][0] for d in locations]

    def costs(self) -> dict[str, Any]:
        """Stage params/FLOPs (equal for every model) and each task's head params/FLOPs."""
        head_params, head_flops = [], []
        stage = None
        for task in self.tasks:
            costs = self.load(task).model.costs()
            stage = stage or costs
            head_params.append(costs["head_params"][task])
            head_flops.append(costs["head_flops"][task])
        return {"stage_params": stage["stage_params"], "stage_flops": stage["stage_flops"],
                "head_params": head_params, "head_flops": head_flops}


def affinity_from_runs(config: str | os.PathLike | Config, runs: str | os.PathLike | None = None, *,
                       out: str | os.PathLike | None = None, images: int | None = None,
                       center: str | None = None, pool: str | int | None = None, bootstrap: int | None = None,
                       seed: int = 0, save_rdms: bool = False, max_memory: int | None = None,
                       device: str | None = None, progress: bool = True, epoch: int | None = None) -> dict[str, Path]:
    """``branchnet affinity --config CFG``: affinity of the config's single-task models
    (``epoch`` E: of their weights after epoch E, by default written to ``affinity-epoch<E>.npz``).

    Settings left as None come from the config's ``affinity`` section (``center``,
    ``pool`` as ``"none"``/``"avg:S"``/S, ``bootstrap``, ``images``) and ``train.device``. Writes ``out`` (default
    ``<runs>/affinity.npz``) with costs, plus ``affinity.json`` and the figures; returns
    their paths.
    """
    from branchnet.affinity.outputs import write_affinity_outputs

    cfg = config if isinstance(config, Config) else load_config(config)
    runs = Path(runs) if runs is not None else cfg.default_runs_dir()
    out = Path(out) if out is not None else affinity_path(runs, epoch=epoch)
    data, settings = measure_affinity(cfg, runs, images=images, center=center, pool=pool, bootstrap=bootstrap,
                                      seed=seed, save_rdms=save_rdms, max_memory=max_memory, device=device,
                                      progress=progress, epoch=epoch)
    return write_affinity_outputs(data, out, settings)


def measure_affinity(cfg: Config, runs: Path, *, images: int | None = None, center: str | None = None,
                     pool: str | int | None = None, bootstrap: int | None = None, seed: int = 0,
                     save_rdms: bool = False, max_memory: int | None = None, device: str | None = None,
                     progress: bool = True, epoch: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The RSA affinity of :func:`affinity_from_runs` and the settings of its ``affinity.json``,
    not yet written (``branchnet run`` checks its networks before it writes them); returns
    ``(AffinityData, settings)``. Only spilled RDMs (with ``max_memory``) touch the disk."""
    from branchnet.rsa import affinity_to_data, compute_affinity, parse_pool

    device = device or cfg.train.device
    source = ModelFeatureSource(cfg, runs, images, device, epoch=epoch)
    center = center or cfg.affinity.center
    pool = parse_pool(cfg.affinity.pool if pool is None else pool)
    bootstrap = cfg.affinity.bootstrap if bootstrap is None else bootstrap
    result = compute_affinity(source, images=source.num_images, center=center, pool=pool, bootstrap=bootstrap,
                              seed=seed, max_memory=max_memory, spill_dir=runs, device=str(source.device),
                              keep_rdms=save_rdms, progress=progress)
    costs = source.costs()
    data = affinity_to_data(result, stage_params=costs["stage_params"], head_params=costs["head_params"],
                            stage_flops=costs["stage_flops"], head_flops=costs["head_flops"],
                            backbone=cfg.model.backbone, input_size=cfg.image_size)
    settings = dict(result.settings, source="single-task models", runs=str(runs), split="affinity",
                    config=str(cfg.source), models=source.models)
    if epoch is not None:
        settings["epoch"] = int(epoch)
    return data, settings


def fafs_from_runs(config: Config, runs: str | os.PathLike, *, out: str | os.PathLike | None = None,
                   images: int | None = None, device: str | None = None, progress: bool = True,
                   epoch: int | None = None) -> dict[str, Path]:
    """``branchnet affinity --config CFG --measure fafs``: the FAFS affinity (docs/design.md,
    "Evaluation") of the config's single-task models, from each model's loss on each of the K
    images of the affinity split. Writes ``out`` (default ``<runs>/affinity-fafs.npz``) with the
    same costs as the RSA file, plus ``affinity-fafs.json`` and the figures (``epoch`` E: the
    models after epoch E, by default ``affinity-fafs-epoch<E>.npz``)."""
    from branchnet.affinity.fafs import fafs_affinity
    from branchnet.affinity.losses import per_image_losses
    from branchnet.progress import progress_bar
    from branchnet.affinity.outputs import write_affinity_outputs

    runs = Path(runs)
    out = Path(out) if out is not None else affinity_path(runs, "fafs", epoch)
    source = ModelFeatureSource(config, runs, images, device or config.train.device, epoch=epoch)
    losses = {}
    with progress_bar(not progress) as bar:
        job = bar.add_task("affinity (fafs): per-image losses", total=len(source.tasks))
        for task in source.tasks:
            dataset = build_dataset(config, "affinity", tasks=[task])
            losses[task] = per_image_losses(source.load(task), task, dataset, images=source.num_images,
                                            batch_size=source.batch_size, device=source.device,
                                            workers=source.loader_settings().workers)
            bar.advance(job)
    data = fafs_affinity(losses, source.locations, **source.costs(), backbone=config.model.backbone,
                         input_size=config.image_size)
    settings = {"measure": "fafs", "source": "single-task models", "runs": str(runs), "split": "affinity",
                "images": source.num_images, "config": str(config.source), "models": source.models,
                "difficult": "loss >= the task's mean loss over the images"}
    if epoch is not None:
        settings["epoch"] = int(epoch)
    return write_affinity_outputs(data, out, settings)


def tag_config(config: Config) -> Config:
    """The config TAG's all-shared network trains with: ``config`` without ``train.roaming``
    (the lookahead measures the plain network)."""
    import dataclasses

    if config.train.roaming is None:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, roaming=None))


def tag_fingerprint(config: Config) -> dict[str, Any]:
    """The fingerprint of TAG's network: the training settings (without ``train.roaming``), the
    tasks, the all-shared tree and ``affinity.tag_every``."""
    from branchnet.nn import NUM_STAGES
    from branchnet.runs import fingerprint
    from branchnet.tree import shared_partitions

    cfg = tag_config(config)
    return fingerprint("tag", cfg, cfg.task_names, partitions=shared_partitions(cfg.task_names, NUM_STAGES),
                       affinity={"tag_every": cfg.affinity.tag_every})


#: TAG's lookahead steps below which ``affinity --measure tag`` warns on stderr and records the
#: warning in ``affinity-tag.json`` (``settings.warning``); the file is still written.
MIN_TAG_STEPS = 3


def tag_from_runs(config: Config, runs: str | os.PathLike, *, out: str | os.PathLike | None = None,
                  resume: bool = False, force: bool = False, quiet: bool = False) -> dict[str, Path]:
    """``branchnet affinity --config CFG --measure tag``: TAG's lookahead affinity at every branch
    point (docs/design.md, "TAG affinity"; :mod:`branchnet.affinity.tag`).

    Trains the all-shared network of the config in ``<runs>/tag`` (reused when trained with
    the same settings and ``affinity.tag_every``; ``resume`` continues an interrupted one,
    ``force`` retrains it), measuring the lookahead on the batch of every ``tag_every``-th
    step, and writes ``out`` (default ``<runs>/affinity-tag.npz``): ``measure = "tag"``, the
    normalised affinity (D, N, N), the raw asymmetric mean ``tag_z`` (D, N, N) with
    ``tag_z[d, i, j]`` = task i's lookahead effect on task j, the number of measured steps
    ``tag_steps``, and the same costs as the RSA file (the network's stage and head
    parameters and FLOPs), plus ``affinity-tag.json`` and the figures.
    """
    import numpy as np

    from branchnet.affinity.file import affinity_data
    from branchnet.affinity.tag import TagHook, tag_affinity
    from branchnet.atomic import ensure_writable_dir
    from branchnet.data import build_tasks, prepare_splits
    from branchnet.nn import NUM_STAGES, BranchedNet
    from branchnet.progress import say
    from branchnet.affinity.outputs import check_out_path, write_affinity_outputs
    from branchnet.runs import claim_network, network_metrics, plan_network, read_metrics, read_record, tag_dir
    from branchnet.steps.commit import commit_network
    from branchnet import distributed as dist_utils
    from branchnet.train.engine import fit
    from branchnet.tree import shared_partitions

    runs = Path(runs)
    cfg = tag_config(config)
    names = cfg.task_names
    if len(names) < 2:
        raise BadInput(f"--measure tag needs at least two tasks (it measures how one task's update changes "
                       f"another's loss); the config lists only {', '.join(names)}")
    out = check_out_path(out if out is not None else affinity_path(runs, "tag"))
    if config.train.roaming is not None and not quiet:
        say("affinity (tag): the all-shared network is trained without train.roaming (TAG measures the plain network)")
    fp = tag_fingerprint(cfg)
    plan = plan_network(tag_dir(runs), fp, "the TAG network", force=force, resume=resume,
                        hint="pass --force to retrain it (the affinity is measured while it trains), or use "
                             "another --runs")
    if plan.note and not quiet:
        say(plan.note)
    if plan.action != "reuse":
        with claim_network(plan, "the TAG network", force=force, resume=resume) as plan:  # one process at a time
            if plan.action != "reuse":
                tasks = build_tasks(cfg)
                torch.manual_seed(cfg.seed)  # the same start as the single-task and branched networks
                model = BranchedNet(tasks, shared_partitions(names, NUM_STAGES), cfg.model, cfg.image_size)
                if dist_utils.is_main():
                    ensure_writable_dir(plan.directory)
                prepare_splits(cfg, ("train", "val"))
                hook = TagHook(cfg.affinity.tag_every, cfg.seed)
                result = fit(model, tasks, cfg, plan.directory, build_dataset(cfg, "train"),
                             build_dataset(cfg, "val"), resume=plan.action == "resume", quiet=quiet,
                             label="tag (all-shared)", hooks=[hook], fingerprint=fp)
                z = hook.mean()
                metrics = network_metrics(model, result, cfg, name="tag", tag={
                    "every": cfg.affinity.tag_every, "steps": hook.count, "z": z.tolist(),
                    "lookahead": "theta' = theta - lr * grad_{stages 0..d} L_i on the step's batch; heads fixed"})
                commit_network(plan.directory, model, cfg, "tag", fp, metrics)
    if plan.action == "reuse":
        metrics = read_metrics(plan.directory, "the TAG network", "retrain it with --force")
    z = np.asarray(metrics["tag"]["z"], dtype=np.float64)
    record, _ = read_record(plan.directory)
    data = affinity_data(
        tag_affinity(z), names, metrics["locations"], "tag", stage_params=metrics["stage_params"],
        head_params=[metrics["head_params"][t] for t in names], stage_flops=metrics["stage_flops"],
        head_flops=[metrics["head_flops"][t] for t in names], backbone=cfg.model.backbone,
        input_size=cfg.image_size,
        extra={"tag_z": z, "tag_steps": np.asarray(int(metrics["tag"]["steps"]), np.int64)})
    settings = {"measure": "tag", "source": "all-shared network trained with the lookahead", "runs": str(runs),
                "network": str(plan.directory), "tag_every": int(metrics["tag"]["every"]),
                "measured_steps": int(metrics["tag"]["steps"]), "config": str(cfg.source),
                "model_sha256": record.model_sha256 if record is not None else None,
                "lookahead": metrics["tag"]["lookahead"]}
    steps = int(metrics["tag"]["steps"])
    if steps < MIN_TAG_STEPS:
        from branchnet.progress import warn

        settings["warning"] = (f"measured on {steps} training step(s), fewer than {MIN_TAG_STEPS}: affinity.tag_every "
                               f"{metrics['tag']['every']} is about as long as the whole training, and so few "
                               "lookahead steps give a near-arbitrary affinity (from one step every entry is +1 or -1); "
                               "lower affinity.tag_every or train longer")
        if dist_utils.is_main():
            warn(f"affinity (tag): {settings['warning']}")
    if not dist_utils.is_main():
        return {}
    return write_affinity_outputs(data, out, settings)


@dataclass(frozen=True)
class MeasureStep:
    """A registered affinity measure: what it computes (:class:`~branchnet.affinity.measure.Measure`)
    and how ``branchnet affinity --config CFG --measure NAME`` gathers its evidence from a run
    directory (``from_runs(config, runs, **options) -> {kind: path}``)."""

    measure: Measure
    from_runs: Callable[..., dict[str, Path]]


#: ``branchnet affinity --measure`` and ``branchnet evaluate --measures``: name -> :class:`MeasureStep`.
MEASURES: Registry[MeasureStep] = Registry("affinity measure", {
    step.measure.name: step for step in (MeasureStep(RSA, affinity_from_runs), MeasureStep(FAFS, fafs_from_runs),
                                         MeasureStep(TAG, tag_from_runs))})

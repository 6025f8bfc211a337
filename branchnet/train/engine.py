"""The training loop shared by single-task, branched and candidate networks.

:func:`fit` trains any network that maps images (B, 3, H, W) to ``{task: prediction}``. It
is seeded per epoch (a run resumed from its per-epoch checkpoint reproduces the
uninterrupted run exactly on the CPU), uses CUDA and mixed precision when present and
DistributedDataParallel under ``torchrun``, and shows a progress bar.

Nothing inside a step reads a value back to the host: the losses are summed on the device
and read once per epoch (and by the progress view at most every
:data:`~branchnet.train.guard.SYNC_SECONDS`), and divergence is flagged on the device
(:mod:`branchnet.train.guard`). Methods that need more than a loss weighting plug in as
:mod:`hooks <branchnet.train.hooks>`.

On CUDA the network and the batches are channels-last and cuDNN autotunes; ``train.compile``
compiles the network after a trial step (:mod:`branchnet.train.acceleration`); batches are
loaded as ``data.workers`` and ``data.loader`` say (:mod:`branchnet.train.loaders`). None of
it changes what is trained (docs/performance.md).

:func:`fit` is the loop; the parts it composes are modules of their own: the optimiser and
schedule (:mod:`~branchnet.train.optim`), the loss weighting (:mod:`~branchnet.train.weighting`),
one step (:mod:`~branchnet.train.step`), the checkpoint and resuming (:mod:`~branchnet.train.checkpoint`),
the validation pass (:mod:`~branchnet.train.validation`), the guard, the history and the hooks.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from branchnet import distributed as dist_utils
from branchnet.atomic import atomic_torch_save, json_safe
from branchnet.devices import resolve_device
from branchnet.progress import progress_bar, say
from branchnet.runs import epoch_checkpoint, fingerprint as run_fingerprint
from branchnet.schema import Config
from branchnet.tasks import Task
from branchnet.train import checkpoint
from branchnet.train.acceleration import compile_network, cuda_settings, memory_format, prepare_model
from branchnet.train.checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT, Progress  # noqa: F401 (re-exported)
from branchnet.train.guard import DDP_CHECK_STEPS, SYNC_SECONDS, DivergenceGuard
from branchnet.train.history import TensorBoardLog, write_history
from branchnet.train.hooks import FitContext, TrainingHook
from branchnet.train.loaders import LoaderSettings, TrainLoader, epoch_seed, make_loader, to_device
from branchnet.train.optim import lr_multiplier, optimizer_for
from branchnet.train.precision import Precision
from branchnet.train.step import backward_and_step, forward_losses
from branchnet.train.validation import split_metrics
from branchnet.train.weighting import LossWeighting, weighting_for

HISTORY_FILE = "history.csv"


@dataclass
class TrainResult:
    """What :func:`fit` returns: final metrics, the per-epoch history, timing.

    ``seconds`` and ``images_per_second`` cover the whole training, resumed parts included.
    """

    val: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    device: str = "cpu"
    world_size: int = 1
    #: Whether the network trained compiled (``train.compile`` and compilation worked).
    compiled: bool = False


def default_fingerprint(config: Config, tasks: Sequence[Task]) -> dict[str, Any]:
    """What a checkpoint must share to be resumed when the caller gives no fingerprint."""
    return run_fingerprint("fit", config, [t.name for t in tasks])


def check_targets(tasks: Sequence[Task], dataset: Dataset, size: tuple[int, int], where: str) -> None:
    """Before training: the first item's target of every task has the shape and dtype its type
    expects (:meth:`branchnet.tasks.base.Task.check_target`), else a one-line :class:`BadInput`."""
    if len(dataset) == 0:  # type: ignore[arg-type]
        return
    _image, targets = dataset[0]
    for task in tasks:
        if task.name in targets:
            task.check_target(targets[task.name], size, where)


def fit(model: nn.Module, tasks: Sequence[Task], config: Config, out_dir: Path, train_set: Dataset,
        val_set: Dataset, test_set: Dataset | None = None, *, resume: bool = False, quiet: bool = False,
        label: str = "training", epochs: int | None = None, weighting: LossWeighting | None = None,
        hooks: Sequence[TrainingHook] = (), fingerprint: Mapping[str, Any] | None = None) -> TrainResult:
    """Train ``model`` on ``tasks`` for ``epochs`` (default ``config.train.epochs``).

    After every epoch, rank 0 writes ``out_dir/checkpoint.pt`` (model, optimiser, weighting,
    hooks, history, timing and ``fingerprint``) and ``out_dir/history.csv`` atomically (with
    ``train.keep_checkpoints``, also that epoch's weights, :func:`branchnet.runs.epoch_checkpoint`).
    With ``resume`` an existing checkpoint with the same fingerprint and number of epochs is
    continued (another one is a :class:`BadInput`). Returns the final validation and test
    metrics and the history; saving the model is the caller's (:func:`branchnet.steps.commit.commit_network`).
    """
    train_cfg = config.train
    epochs = epochs or train_cfg.epochs
    device = resolve_device(train_cfg.device)
    check_targets(tasks, train_set, config.image_size, "the train split")
    precision = Precision.for_device(device, train_cfg.amp)
    prepare_model(model, device)  # channels_last on CUDA (docs/performance.md)
    names = [t.name for t in tasks]
    fingerprint = json_safe(dict(fingerprint or default_fingerprint(config, tasks)))
    weighting = weighting or weighting_for(model, names, train_cfg)
    weighting.to(device)
    optimizer, weighting_params = optimizer_for(model, weighting, train_cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]  # before a checkpoint sets the scheduled ones
    out_dir = Path(out_dir)
    before = _start(out_dir / CHECKPOINT_FILE, resume, label, fingerprint, epochs, device, model, optimizer,
                    weighting, precision)

    loading = LoaderSettings.resolve(config.data, device)
    train_loader = TrainLoader(train_set, train_cfg.batch_size, loading, config.seed)
    net, compiled = _training_network(model, tasks, train_set, train_cfg, device, precision, label)
    ctx = FitContext(model=model, net=net, tasks=list(tasks), optimizer=optimizer, device=device, epochs=epochs,
                     steps_per_epoch=len(train_loader), seed=config.seed, precision=precision,
                     epoch=before.epoch, step=before.step)
    for hook in hooks:
        if hook.name in before.hooks:
            hook.load_state_dict(before.hooks[hook.name])
        hook.on_fit_start(ctx)
    val_loader = make_loader(val_set, train_cfg.batch_size, loading, train=False, device=device)
    run = _Run(ctx, config, out_dir, label, fingerprint, weighting, weighting_params, base_lrs, hooks, before,
               DivergenceGuard(names, device), quiet or not dist_utils.is_main())
    board = TensorBoardLog(out_dir) if dist_utils.is_main() else None
    speed = contextlib.ExitStack()
    speed.enter_context(cuda_settings(device))
    try:
        with progress_bar(run.quiet) as bar:
            job = bar.add_task(label, total=ctx.total_steps, completed=ctx.step)
            for epoch in range(before.epoch, epochs):
                record = _train_epoch(run, train_loader, epoch, bar, job)
                _end_epoch(run, record, val_loader, board)
    finally:
        speed.close()
        train_loader.close()
        if board is not None:
            board.close()
    seconds = run.seconds()
    images_total = before.images + run.images_seen
    if not run.val_metrics:  # resumed after the last epoch
        run.val_metrics = split_metrics(model, tasks, val_loader, device, precision)
    test_metrics: dict[str, dict[str, float]] = {}
    if test_set is not None:
        test_loader = make_loader(test_set, train_cfg.batch_size, loading, train=False, device=device)
        test_metrics = split_metrics(model, tasks, test_loader, device, precision)
    return TrainResult(val=run.val_metrics, test=test_metrics, history=run.history, seconds=seconds,
                       images_per_second=images_total / seconds if seconds > 0 and images_total else 0.0,
                       device=str(device), world_size=dist_utils.world_size(), compiled=compiled)


def _start(path: Path, resume: bool, label: str, fingerprint: Mapping[str, Any], epochs: int, device: torch.device,
           model: nn.Module, optimizer: torch.optim.Optimizer, weighting: LossWeighting,
           precision: Precision) -> Progress:
    """Where the training starts: from the checkpoint at ``path`` with ``resume``, else from scratch
    (saying so when an interrupted run is there and started over)."""
    if path.is_file() and resume:
        before = checkpoint.resume(path, fingerprint, epochs, device, model, optimizer, weighting, precision)
        say(f"{label}: resuming after epoch {before.epoch}/{epochs}")
        return before
    if path.is_file() and dist_utils.is_main():
        say(f"{label}: an interrupted run was found and is started over (pass --resume to continue it)")
    return Progress()


def _training_network(model: nn.Module, tasks: Sequence[Task], train_set: Dataset, train_cfg: Any,
                      device: torch.device, precision: Precision, label: str) -> tuple[nn.Module, bool]:
    """(what the loop calls for the forward pass, whether it is compiled): ``model``, compiled after a
    trial step on the first training images with ``train.compile``, in DDP under torchrun."""
    net: nn.Module = model
    compiled = False
    if train_cfg.compile:
        from torch.utils.data import default_collate

        images, targets = default_collate([train_set[i] for i in range(train_cfg.batch_size)])
        net, failure = compile_network(model, tasks, to_device(images, device, memory_format(device)),
                                       to_device(targets, device), precision, label)
        compiled = failure is None
    if dist_utils.is_distributed():
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return net, compiled


@dataclass
class _Run:
    """What the epochs of one :func:`fit` share, and what they accumulate."""

    ctx: FitContext
    config: Config
    out_dir: Path
    label: str
    fingerprint: dict[str, Any]
    weighting: LossWeighting
    weighting_params: list[nn.Parameter]
    base_lrs: list[float]
    hooks: Sequence[TrainingHook]
    before: Progress
    guard: DivergenceGuard
    quiet: bool
    started: float = field(default_factory=time.perf_counter)
    images_seen: int = 0
    val_metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.before.history

    def seconds(self) -> float:
        """Training time so far, the parts before a resume included."""
        return self.before.seconds + time.perf_counter() - self.started


def _train_epoch(run: _Run, train_loader: TrainLoader, epoch: int, bar: Any, job: Any) -> dict[str, Any]:
    """One epoch of optimiser steps; returns its history record (mean loss per task over every
    rank's batches, the weights, lr, speed)."""
    ctx, train_cfg, names = run.ctx, run.config.train, [t.name for t in run.ctx.tasks]
    device, layout, world = ctx.device, memory_format(ctx.device), dist_utils.world_size()
    ctx.epoch = epoch
    epoch_started = time.perf_counter()
    torch.manual_seed(epoch_seed(run.config.seed, epoch) + dist_utils.rank())
    loader = train_loader.epoch(epoch)
    ctx.net.train()
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    batches = epoch_images = 0
    last_read = time.perf_counter()
    for images, targets in loader:
        images, targets = to_device(images, device, layout), to_device(targets, device)
        for group, base in zip(ctx.optimizer.param_groups, run.base_lrs):
            group["lr"] = base * lr_multiplier(ctx.step, ctx.total_steps, train_cfg.schedule)
        for hook in run.hooks:
            hook.before_step(ctx, images, targets)
        losses, total = forward_losses(ctx.net, ctx.tasks, images, targets, run.weighting, ctx.precision)
        stacked = torch.stack([losses[n].detach() for n in names])
        run.guard.observe(stacked, ctx.step)
        backward_and_step(total, ctx.model, ctx.optimizer, ctx.precision, run.weighting_params, train_cfg.clip_grad)
        sums += stacked.double()
        batches += 1
        ctx.step += 1
        epoch_images += images.shape[0] * world
        for hook in run.hooks:
            hook.after_step(ctx)
        description = None
        if dist_utils.is_distributed():
            if ctx.step % DDP_CHECK_STEPS == 0:
                run.guard.check(ctx.steps_per_epoch, ctx.lr)
        elif time.perf_counter() - last_read >= SYNC_SECONDS:
            run.guard.check(ctx.steps_per_epoch, ctx.lr)  # the one read-back, with the loss shown
            description = f"{run.label} e{epoch + 1}/{ctx.epochs} loss {float(total.detach()):.3f}"
            last_read = time.perf_counter()
        if description is not None:
            bar.update(job, advance=1, description=description)
        else:
            bar.update(job, advance=1)
    run.guard.check(ctx.steps_per_epoch, ctx.lr)
    # the epoch's mean loss per task over every rank's batches (DWA needs the global one)
    sums = dist_utils.all_reduce_sum(sums)
    count = batches * world
    mean_losses = {n: float(v) / max(count, 1) for n, v in zip(names, sums.tolist())}
    run.weighting.epoch_end(mean_losses)
    run.images_seen += epoch_images
    epoch_seconds = time.perf_counter() - epoch_started
    return {"epoch": epoch + 1, "train_loss": mean_losses, "weights": run.weighting.weights(), "lr": ctx.lr,
            "images_per_second": round(epoch_images / epoch_seconds, 1) if epoch_seconds > 0 else None,
            "seconds": round(epoch_seconds, 2)}


def _end_epoch(run: _Run, record: dict[str, Any], val_loader: Any, board: TensorBoardLog | None) -> None:
    """Score the validation split when due, let the hooks add to the record, and (rank 0) write
    the checkpoint, the kept epoch's weights and ``history.csv``; all ranks meet at a barrier."""
    ctx, train_cfg, epoch = run.ctx, run.config.train, run.ctx.epoch
    if (epoch + 1) % train_cfg.eval_every == 0 or epoch + 1 == ctx.epochs:
        run.val_metrics = split_metrics(ctx.model, ctx.tasks, val_loader, ctx.device, ctx.precision)
        record["val"] = run.val_metrics
        summary = ", ".join(f"{t.name} {t.main_metric}={run.val_metrics[t.name][t.main_metric]:.4g}"
                            for t in ctx.tasks)
        if not run.quiet:
            say(f"{run.label} epoch {epoch + 1}/{ctx.epochs}: {summary}")
    for hook in run.hooks:
        hook.on_epoch_end(ctx, record)
    record = json_safe(record)
    run.history.append(record)
    if dist_utils.is_main():
        now = Progress(epoch + 1, ctx.step, run.history, run.seconds(), run.before.images + run.images_seen)
        atomic_torch_save(run.out_dir / CHECKPOINT_FILE, checkpoint.training_state(
            run.fingerprint, ctx.epochs, now, ctx.model, ctx.optimizer, run.weighting, ctx.precision, run.hooks))
        if train_cfg.keep_checkpoints:  # the weights of this epoch, for `affinity --epoch E`
            atomic_torch_save(epoch_checkpoint(run.out_dir, epoch + 1),
                              checkpoint.epoch_weights(run.fingerprint, epoch + 1, ctx.epochs, ctx.model))
        write_history(run.out_dir / HISTORY_FILE, run.history)
        if board is not None:
            board.log(record)
    dist_utils.barrier()

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

from branchnet.atomic import atomic_torch_save, json_safe, load_checkpoint
from branchnet.schema import Config
from branchnet.errors import BadInput
from branchnet.progress import progress_bar, say
from branchnet.tasks import Task
from branchnet import distributed as dist_utils
from branchnet.train.acceleration import compile_network, cuda_settings, memory_format, prepare_model
from branchnet.devices import resolve_device
from branchnet.train.evaluate import evaluate
from branchnet.train.guard import DDP_CHECK_STEPS, SYNC_SECONDS, DivergenceGuard
from branchnet.train.history import TensorBoardLog, write_history
from branchnet.train.hooks import FitContext, TrainingHook
from branchnet.train.loaders import LoaderSettings, TrainLoader, epoch_seed, make_loader, to_device
from branchnet.train.optim import build_optimizer, lr_multiplier
from branchnet.train.precision import Precision
from branchnet.train.weighting import WEIGHTINGS, LossWeighting, build_weighting

CHECKPOINT_FORMAT = "branchnet.checkpoint/2"
CHECKPOINT_FILE = "checkpoint.pt"
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
    from branchnet.runs import fingerprint

    return fingerprint("fit", config, [t.name for t in tasks])


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
    from branchnet.runs import EPOCH_FORMAT, checkpoint_mismatch, epoch_checkpoint

    train_cfg = config.train
    epochs = epochs or train_cfg.epochs
    device = resolve_device(train_cfg.device)
    precision = Precision.for_device(device, train_cfg.amp)
    prepare_model(model, device)  # channels_last on CUDA (docs/performance.md)
    layout = memory_format(device)
    names = [t.name for t in tasks]
    fingerprint = json_safe(dict(fingerprint or default_fingerprint(config, tasks)))
    scheme = WEIGHTINGS.get(train_cfg.weighting)
    shared = model.last_shared_weight() if scheme is not None and scheme.needs_shared_layer else None
    weighting = weighting or build_weighting(train_cfg.weighting, names, train_cfg.loss_weights, shared)
    weighting.to(device)
    params = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    weighting_params = [p for p in weighting.parameters() if p.requires_grad]
    if weighting_params:
        params.append({"params": weighting_params, "weight_decay": 0.0})
    optimizer = build_optimizer(params, train_cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_FILE
    start_epoch, step, history = 0, 0, []
    seconds_before, images_before = 0.0, 0
    hook_states: dict[str, Any] = {}
    if ckpt_path.is_file() and resume:
        state = load_checkpoint(ckpt_path, map_location=device)
        why = checkpoint_mismatch(state.get("fingerprint"), fingerprint) if state.get("format") == CHECKPOINT_FORMAT \
            else "it was written by another version of branchnet"
        if why is None and state.get("epochs") != epochs:
            why = f"epochs {state.get('epochs')} -> {epochs}"
        if why is not None:
            raise BadInput(f"checkpoint {ckpt_path} cannot be resumed with these settings ({why}); "
                           "resume with the same settings, or drop --resume to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        weighting.load_state_dict(state["weighting"])
        if precision.scaler is not None and state.get("scaler"):
            precision.scaler.load_state_dict(state["scaler"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        seconds_before, images_before = float(state.get("seconds", 0.0)), int(state.get("images", 0))
        hook_states = state.get("hooks") or {}
        say(f"{label}: resuming after epoch {start_epoch}/{epochs}")
    elif ckpt_path.is_file() and dist_utils.is_main():
        say(f"{label}: an interrupted run was found and is started over (pass --resume to continue it)")

    loading = LoaderSettings.resolve(config.data, device)
    train_loader = TrainLoader(train_set, train_cfg.batch_size, loading, config.seed)
    steps_per_epoch = len(train_loader)
    net: nn.Module = model
    compiled = False
    if train_cfg.compile:
        from torch.utils.data import default_collate

        images, targets = default_collate([train_set[i] for i in range(train_cfg.batch_size)])
        net, failure = compile_network(model, tasks, to_device(images, device, layout), to_device(targets, device),
                                       precision, label)
        compiled = failure is None
    if dist_utils.is_distributed():
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    total_steps = steps_per_epoch * epochs
    ctx = FitContext(model=model, net=net, tasks=list(tasks), optimizer=optimizer, device=device, epochs=epochs,
                     steps_per_epoch=steps_per_epoch, seed=config.seed, precision=precision, epoch=start_epoch,
                     step=step)
    for hook in hooks:
        if hook.name in hook_states:
            hook.load_state_dict(hook_states[hook.name])
        hook.on_fit_start(ctx)
    val_loader = make_loader(val_set, train_cfg.batch_size, loading, train=False, device=device)
    val_metrics: dict[str, dict[str, float]] = {}
    guard = DivergenceGuard(names, device)
    distributed = dist_utils.is_distributed()
    world = dist_utils.world_size()
    board = TensorBoardLog(out_dir) if dist_utils.is_main() else None
    started = time.perf_counter()
    images_seen = 0
    quiet_here = quiet or not dist_utils.is_main()
    speed = contextlib.ExitStack()
    speed.enter_context(cuda_settings(device))
    try:
        with progress_bar(quiet_here) as bar:
            job = bar.add_task(label, total=total_steps, completed=step)
            last_read = time.perf_counter()
            for epoch in range(start_epoch, epochs):
                ctx.epoch = epoch
                epoch_started = time.perf_counter()
                torch.manual_seed(epoch_seed(config.seed, epoch) + dist_utils.rank())
                loader = train_loader.epoch(epoch)
                net.train()
                sums = torch.zeros(len(names), dtype=torch.float64, device=device)
                batches = 0
                epoch_images = 0
                for images, targets in loader:
                    images, targets = to_device(images, device, layout), to_device(targets, device)
                    for group, base in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base * lr_multiplier(step, total_steps, train_cfg.schedule)
                    for hook in hooks:
                        hook.before_step(ctx, images, targets)
                    with precision.autocast():
                        outputs = net(images)
                        losses = {t.name: t.loss(outputs[t.name].float(), targets[t.name]) for t in tasks}
                        total = weighting.combine(losses)
                    stacked = torch.stack([losses[n].detach() for n in names])
                    guard.observe(stacked, step)
                    optimizer.zero_grad(set_to_none=True)
                    if precision.scaler is not None:
                        precision.scaler.scale(total).backward()
                        precision.scaler.unscale_(optimizer)
                    else:
                        total.backward()
                    dist_utils.average_gradients(weighting_params)
                    if train_cfg.clip_grad > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_grad)
                    if precision.scaler is not None:
                        precision.scaler.step(optimizer)
                        precision.scaler.update()
                    else:
                        optimizer.step()
                    sums += stacked.double()
                    batches += 1
                    step += 1
                    ctx.step = step
                    epoch_images += images.shape[0] * world
                    for hook in hooks:
                        hook.after_step(ctx)
                    description = None
                    if distributed:
                        if step % DDP_CHECK_STEPS == 0:
                            guard.check(steps_per_epoch, ctx.lr)
                    elif time.perf_counter() - last_read >= SYNC_SECONDS:
                        guard.check(steps_per_epoch, ctx.lr)  # the one read-back, with the loss shown
                        description = f"{label} e{epoch + 1}/{epochs} loss {float(total.detach()):.3f}"
                        last_read = time.perf_counter()
                    if description is not None:
                        bar.update(job, advance=1, description=description)
                    else:
                        bar.update(job, advance=1)
                guard.check(steps_per_epoch, ctx.lr)
                # the epoch's mean loss per task over every rank's batches (DWA needs the global one)
                sums = dist_utils.all_reduce_sum(sums)
                count = batches * world
                mean_losses = {n: float(v) / max(count, 1) for n, v in zip(names, sums.tolist())}
                weighting.epoch_end(mean_losses)
                images_seen += epoch_images
                epoch_seconds = time.perf_counter() - epoch_started
                record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": mean_losses,
                                          "weights": weighting.weights(), "lr": ctx.lr,
                                          "images_per_second": round(epoch_images / epoch_seconds, 1)
                                          if epoch_seconds > 0 else None,
                                          "seconds": round(epoch_seconds, 2)}
                if (epoch + 1) % train_cfg.eval_every == 0 or epoch + 1 == epochs:
                    val_metrics = evaluate(model, tasks, val_loader, device, precision)
                    record["val"] = val_metrics
                    summary = ", ".join(f"{t.name} {t.main_metric}={val_metrics[t.name][t.main_metric]:.4g}"
                                        for t in tasks)
                    if not quiet_here:
                        say(f"{label} epoch {epoch + 1}/{epochs}: {summary}")
                for hook in hooks:
                    hook.on_epoch_end(ctx, record)
                record = json_safe(record)
                history.append(record)
                if dist_utils.is_main():
                    atomic_torch_save(ckpt_path, {
                        "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epochs": epochs,
                        "epoch": epoch + 1, "step": step, "history": history,
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "weighting": weighting.state_dict(),
                        "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
                        "hooks": {hook.name: hook.state_dict() for hook in hooks},
                        "seconds": seconds_before + time.perf_counter() - started,
                        "images": images_before + images_seen,
                    })
                    if train_cfg.keep_checkpoints:  # the weights of this epoch, for `affinity --epoch E`
                        atomic_torch_save(epoch_checkpoint(out_dir, epoch + 1), {
                            "format": EPOCH_FORMAT, "fingerprint": fingerprint, "epoch": epoch + 1,
                            "epochs": epochs, "model": model.state_dict()})
                    write_history(out_dir / HISTORY_FILE, history)
                    if board is not None:
                        board.log(record)
                dist_utils.barrier()
    finally:
        speed.close()
        train_loader.close()
        if board is not None:
            board.close()
    seconds = seconds_before + time.perf_counter() - started
    images_total = images_before + images_seen
    if not val_metrics:  # resumed after the last epoch
        val_metrics = evaluate(model, tasks, val_loader, device, precision)
    test_metrics: dict[str, dict[str, float]] = {}
    if test_set is not None:
        test_loader = make_loader(test_set, train_cfg.batch_size, loading, train=False, device=device)
        test_metrics = evaluate(model, tasks, test_loader, device, precision)
    return TrainResult(val=val_metrics, test=test_metrics, history=history, seconds=seconds,
                       images_per_second=images_total / seconds if seconds > 0 and images_total else 0.0,
                       device=str(device), world_size=world, compiled=compiled)

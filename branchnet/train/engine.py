"""Training and evaluation of any network that maps images to ``{task: prediction}``.

One loop serves single-task models, branched networks and candidate networks. It is
seeded per epoch (so a run resumed from its per-epoch checkpoint reproduces the
uninterrupted run exactly on the CPU), uses cuda and mixed precision when present,
DistributedDataParallel under ``torchrun``, and shows a progress bar.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from branchnet.train import distributed as dist_utils
from branchnet.config import Config, TrainConfig
from branchnet.train.devices import resolve_device
from branchnet.errors import BadInput
from branchnet.atomic import atomic_torch_save, load_checkpoint
from branchnet.progress import progress_bar, say
from branchnet.tasks import Task
from branchnet.train.weighting import LossWeighting, build_weighting, finite_or_raise

CHECKPOINT_FORMAT = "branchnet.checkpoint/1"


@dataclass
class Precision:
    """Mixed precision on cuda: bfloat16 where supported (no scaler), else float16 + scaler."""

    enabled: bool
    dtype: torch.dtype = torch.float32
    scaler: Any = None

    @classmethod
    def for_device(cls, device: torch.device, amp: bool) -> "Precision":
        if device.type != "cuda" or not amp:
            return cls(False)
        if torch.cuda.is_bf16_supported():
            return cls(True, torch.bfloat16)
        return cls(True, torch.float16, torch.amp.GradScaler("cuda"))

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (independent of how many epochs ran before a resume)."""
    return (seed * 1_000_003 + epoch * 7919) % (2 ** 31)


def lr_multiplier(step: int, total: int, schedule: str) -> float:
    """Learning-rate factor at optimiser step ``step`` of ``total``."""
    progress = min(step / max(total, 1), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_optimizer(parameters, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.Adam(parameters, lr=train.lr, weight_decay=train.weight_decay)


def make_loader(dataset: Dataset, batch_size: int, workers: int, *, train: bool, seed: int = 0,
                epoch: int = 0, device: torch.device | None = None) -> DataLoader:
    """A loader over this process's share of ``dataset``.

    Training: shuffled with a generator seeded by (seed, epoch), last incomplete batch
    dropped (BatchNorm needs more than one sample); under torch.distributed each rank
    takes every world-th item of the same permutation. Evaluation: in order, each rank
    its own shard, nothing repeated.
    """
    world, rank = dist_utils.world_size(), dist_utils.rank()
    pin = device is not None and device.type == "cuda"
    if train:
        getattr(dataset, "set_epoch", lambda epoch, seed: None)(epoch, seed)  # augmentation draws of this epoch
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        if world > 1:
            order = torch.randperm(len(dataset), generator=generator).tolist()
            usable = len(order) - len(order) % world
            sampler = order[rank:usable:world]
        else:
            sampler = RandomSampler(dataset, generator=generator)
        if len(dataset) // world < batch_size:
            raise BadInput(f"the training split has {len(dataset)} images, fewer than one batch of "
                           f"{batch_size} per process; lower train.batch_size or enlarge data.splits.train")
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                          num_workers=workers, pin_memory=pin, persistent_workers=False)
    sampler = dist_utils.ShardSampler(len(dataset), rank, world)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


@torch.no_grad()
def evaluate(model: nn.Module, tasks: Sequence[Task], loader: DataLoader, device: torch.device,
             precision: Precision | None = None, quiet: bool = True, label: str = "evaluating"
             ) -> dict[str, dict[str, float]]:
    """Split-level metrics ``{task: {metric: value}}`` (summed over ranks when distributed)."""
    precision = precision or Precision(False)
    was_training = model.training
    model.eval()
    metrics = {t.name: t.new_metrics() for t in tasks}
    with progress_bar(quiet or not dist_utils.is_main()) as bar:
        job = bar.add_task(label, total=len(loader))
        for images, targets in loader:
            images, targets = _to(images, device), _to(targets, device)
            with precision.autocast():
                outputs = model(images)
            for task in tasks:
                metrics[task.name].update(outputs[task.name].float(), targets[task.name])
            bar.advance(job)
    model.train(was_training)
    result = {}
    for name, m in metrics.items():
        m.all_reduce()
        result[name] = m.compute()
    return result


def shared_layer(model: nn.Module) -> nn.Parameter | None:
    """GradNorm's W: the last weight of the deepest node shared by all tasks, or None."""
    partitions = getattr(model, "partitions", None)
    if not partitions:
        return None
    shared_depths = [d for d, p in enumerate(partitions) if len(p) == 1]
    if not shared_depths or shared_depths[0] != 0:
        return None
    deepest = max(d for d in shared_depths if all(len(partitions[k]) == 1 for k in range(d + 1)))
    node = model.nodes[model.node_key(deepest, 0)]
    weights = [p for p in node.parameters() if p.ndim >= 2]
    return weights[-1] if weights else None


@dataclass
class TrainResult:
    """What :func:`fit` returns: final metrics, the per-epoch history, timing."""

    val: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    device: str = "cpu"
    world_size: int = 1


def _checkpoint_config(config: Config) -> dict[str, Any]:
    """The parts of a config that must not change across a resume."""
    d = config.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("device", "eval_every")}
    d["data"] = {k: v for k, v in d["data"].items() if k != "workers"}
    return d


def fit(model: nn.Module, tasks: Sequence[Task], config: Config, out_dir: Path, train_set: Dataset,
        val_set: Dataset, test_set: Dataset | None = None, *, resume: bool = False, quiet: bool = False,
        label: str = "training", epochs: int | None = None, weighting: LossWeighting | None = None
        ) -> TrainResult:
    """Train ``model`` on ``tasks`` for ``epochs`` (default ``config.train.epochs``).

    Writes ``out_dir/checkpoint.pt`` after every epoch (rank 0, atomically); with
    ``resume`` an existing checkpoint made with the same config is continued. Returns
    the final validation and test metrics and the history. The caller saves the model.
    """
    train_cfg = config.train
    epochs = epochs or train_cfg.epochs
    device = resolve_device(train_cfg.device)
    precision = Precision.for_device(device, train_cfg.amp)
    model.to(device)
    names = [t.name for t in tasks]
    weighting = weighting or build_weighting(train_cfg.weighting, names, train_cfg.loss_weights, shared_layer(model))
    weighting.to(device)
    params = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    extra = [p for p in weighting.parameters() if p.requires_grad]
    if extra:
        params.append({"params": extra, "weight_decay": 0.0})
    optimizer = build_optimizer(params, train_cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    net: nn.Module = model
    if dist_utils.is_distributed():
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt_path = Path(out_dir) / "checkpoint.pt"
    start_epoch, step, history = 0, 0, []
    if ckpt_path.is_file() and resume:
        state = load_checkpoint(ckpt_path, map_location=device)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("config") != _checkpoint_config(config) \
                or state.get("epochs") != epochs:
            raise BadInput(f"checkpoint {ckpt_path} was made with different settings; "
                           "resume with the same config, or start over with --force")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        weighting.load_state_dict(state["weighting"])
        if precision.scaler is not None and state.get("scaler"):
            precision.scaler.load_state_dict(state["scaler"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        say(f"{label}: resuming after epoch {start_epoch}/{epochs}")
    elif ckpt_path.is_file() and dist_utils.is_main():
        say(f"{label}: an interrupted run was found and is started over (pass --resume to continue it)")

    workers = config.data.workers
    steps_per_epoch = len(make_loader(train_set, train_cfg.batch_size, workers, train=True, seed=config.seed,
                                      epoch=0, device=device))
    total_steps = steps_per_epoch * epochs
    val_loader = make_loader(val_set, train_cfg.batch_size, workers, train=False, device=device)
    val_metrics: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    images_seen = 0
    quiet_here = quiet or not dist_utils.is_main()
    with progress_bar(quiet_here) as bar:
        job = bar.add_task(label, total=total_steps, completed=step)
        for epoch in range(start_epoch, epochs):
            torch.manual_seed(epoch_seed(config.seed, epoch) + dist_utils.rank())
            loader = make_loader(train_set, train_cfg.batch_size, workers, train=True, seed=config.seed,
                                 epoch=epoch, device=device)
            net.train()
            sums = torch.zeros(len(names), dtype=torch.float64)
            batches = 0
            for images, targets in loader:
                images, targets = _to(images, device), _to(targets, device)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * lr_multiplier(step, total_steps, train_cfg.schedule)
                with precision.autocast():
                    outputs = net(images)
                    losses = {t.name: t.loss(outputs[t.name].float(), targets[t.name]) for t in tasks}
                    total = weighting.combine(losses)
                if batches % 20 == 0:
                    finite_or_raise(losses)
                optimizer.zero_grad(set_to_none=True)
                if precision.scaler is not None:
                    precision.scaler.scale(total).backward()
                    precision.scaler.unscale_(optimizer)
                else:
                    total.backward()
                if train_cfg.clip_grad > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_grad)
                if precision.scaler is not None:
                    precision.scaler.step(optimizer)
                    precision.scaler.update()
                else:
                    optimizer.step()
                sums += torch.tensor([float(losses[n].detach()) for n in names], dtype=torch.float64)
                batches += 1
                step += 1
                images_seen += images.shape[0] * dist_utils.world_size()
                bar.update(job, advance=1, description=f"{label} e{epoch + 1}/{epochs} loss {float(total.detach()):.3f}")
            mean_losses = {n: float(sums[i] / max(batches, 1)) for i, n in enumerate(names)}
            weighting.epoch_end(mean_losses)
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": mean_losses, "weights": weighting.weights()}
            if (epoch + 1) % train_cfg.eval_every == 0 or epoch + 1 == epochs:
                val_metrics = evaluate(model, tasks, val_loader, device, precision)
                record["val"] = val_metrics
                summary = ", ".join(f"{t.name} {t.main_metric}={val_metrics[t.name][t.main_metric]:.4g}" for t in tasks)
                if not quiet_here:
                    say(f"{label} epoch {epoch + 1}/{epochs}: {summary}")
            history.append(record)
            if dist_utils.is_main():
                atomic_torch_save(ckpt_path, {
                    "format": CHECKPOINT_FORMAT, "config": _checkpoint_config(config), "epochs": epochs,
                    "epoch": epoch + 1, "step": step, "history": history,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "weighting": weighting.state_dict(),
                    "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
                })
            dist_utils.barrier()
    seconds = time.perf_counter() - started
    if not val_metrics:  # resumed after the last epoch
        val_metrics = evaluate(model, tasks, val_loader, device, precision)
    test_metrics: dict[str, dict[str, float]] = {}
    if test_set is not None:
        test_loader = make_loader(test_set, train_cfg.batch_size, workers, train=False, device=device)
        test_metrics = evaluate(model, tasks, test_loader, device, precision)
    return TrainResult(val=val_metrics, test=test_metrics, history=history, seconds=seconds,
                       images_per_second=images_seen / seconds if seconds > 0 and images_seen else 0.0,
                       device=str(device), world_size=dist_utils.world_size())

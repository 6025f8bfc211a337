"""GPU check of branchnet: mixed-precision training, resuming, NCCL + DDP, RSA on the device and
speed against bare PyTorch, in one run that prints a table (docs/performance.md).

Checks (GPU-only ones are skipped on the CPU, and the table says so):

1. ``train``: bf16 and fp16 training (float32 on the CPU) of a single-task network and of a
   branched network for a few hundred steps: every loss finite, the loss decreasing (mean
   of the last tenth of the steps below the first tenth), and a checkpoint resumed giving
   the next step's loss of the uninterrupted run (relative tolerance in the table).
2. ``ddp``: the single-task network trained under torchrun with NCCL, one process per GPU
   (on one GPU still NCCL and DistributedDataParallel), the same global batch: its
   validation metric and final training loss against the single-process run's.
3. ``rsa``: the affinity of K=500 images computed on the GPU (features made there,
   never copied to the host) against the CPU result, within 1e-5; its time against the
   bare float32 Gram products of the same blocks on the same GPU (the floor). On the
   CPU the GPU path's code runs on CPU tensors against the numpy path.
4. ``speed``: training images/s of branchnet's loop against a bare PyTorch loop written
   here (the same timm encoder and head, batch, AMP setting, loader settings, no branchnet
   code; goal >= 0.9x), and a branched network's forward time against the sum of its
   nodes' and heads' forwards timed one by one.
5. ``jobs``: networks per hour of the scenes study's network size (``configs/scenes-evaluate.yaml``:
   five tasks at 48 x 48, resnet18 x0.25, batch 32) trained one at a time in this process
   against ``--per-device`` 1, 2 and 4 worker processes sharing one GPU (the pool of
   ``evaluate --jobs``, :mod:`branchnet.steps.jobs`), with the GPU's mean utilisation during
   each (``torch.cuda.utilization``, else ``nvidia-smi``). GPU only.
6. GPU memory peak of each (``torch.cuda.max_memory_allocated``).

Everything is generated here (scenes images rendered into ``--cache``, random tensors,
timm models with random weights): nothing is downloaded. The whole run takes well under 5
minutes on one GPU; ``--quick`` (the smallest sizes, one CPU thread) runs in under a minute
on a CPU and is what the test suite exercises.

Usage:
    python tools/gpu_check.py [--out gpu_check.md] [--device auto|cpu|cuda] [--quick]
                              [--cache DIR] [--skip ddp,speed,...]

Exit status 1 when a check fails, 0 otherwise (speed goals on the CPU are reported, not
checked: a shared CPU's timings say little).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

CHECKS = ("train", "ddp", "rsa", "speed", "jobs")


# ------------------------------------------------------------------------------------ sizes

@dataclass(frozen=True)
class Sizes:
    """How big each check is."""

    name: str
    image: int  # training checks: scenes images, image x image pixels
    train: int
    val: int
    batch: int
    epochs: int
    width: float  # ResNet-18 channel multiplier
    head_channels: int
    rsa_images: int
    rsa_features: int
    rsa_tasks: int
    rsa_locations: int
    speed_image: int  # speed checks: random tensors
    speed_images: int
    speed_batch: int
    speed_epochs: int
    speed_width: float
    forward_repeats: int
    lr: float = 0.01  # Adam, training checks


GPU = Sizes("gpu", image=64, train=1024, val=128, batch=16, epochs=4, width=1.0, head_channels=64,
            rsa_images=500, rsa_features=65536, rsa_tasks=5, rsa_locations=4,
            speed_image=128, speed_images=4096, speed_batch=64, speed_epochs=4, speed_width=1.0, forward_repeats=20,
            lr=0.002)
CPU = Sizes("cpu", image=32, train=96, val=16, batch=16, epochs=3, width=0.125, head_channels=8,
            rsa_images=500, rsa_features=4096, rsa_tasks=4, rsa_locations=3,
            speed_image=32, speed_images=128, speed_batch=16, speed_epochs=2, speed_width=0.125, forward_repeats=3)
# The test suite's tiny scenes data (tests/conftest.py TINY_CONFIG), so that --cache can share it.
QUICK = Sizes("quick", image=32, train=48, val=16, batch=16, epochs=2, width=0.125, head_channels=8,
              rsa_images=500, rsa_features=512, rsa_tasks=3, rsa_locations=2,
              speed_image=32, speed_images=32, speed_batch=16, speed_epochs=2, speed_width=0.125, forward_repeats=1)

#: Relative tolerance of the resumed step's loss: exact on the CPU; on a GPU the resumed run
#: autotunes its own cuDNN kernels, whose rounding differs under mixed precision.
RESUME_RTOL = {"cpu": 1e-6, "cuda": 1e-2}
#: Relative tolerance of the DDP run's metrics against the single process: one process per
#: GPU differs only by kernel rounding; several differ in BatchNorm statistics (per GPU).
DDP_RTOL = {1: 2e-2, "more": 1e-1}
RSA_ATOL = 1e-5
SPEED_GOAL = 0.9
#: ``jobs``: networks per GPU at once, against one at a time in this process.
PER_DEVICE = (1, 2, 4)
#: ``jobs``: the study's network (configs/scenes-evaluate.yaml), trained for JOBS_EPOCHS epochs.
JOBS_TASKS = ["seg", "depth", "normals", "edges", "keypoints"]
JOBS_EPOCHS = 2
BRANCHED_PARTITIONS = [[["seg", "depth", "normals"]], [["seg", "depth", "normals"]],
                       [["seg", "depth"], ["normals"]], [["seg"], ["depth"], ["normals"]]]


# ------------------------------------------------------------------------------------ table

@dataclass
class Row:
    check: str
    setting: str
    result: str  # PASS, FAIL, SKIP, INFO
    measured: str = ""
    bound: str = ""
    memory: str = "-"
    seconds: float | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        mark = {"PASS": "ok", "FAIL": "FAILED", "SKIP": "skipped", "INFO": "info"}[row.result]
        print(f"  [{mark}] {row.check} {row.setting}: {row.measured}", flush=True)

    @property
    def failed(self) -> bool:
        return any(r.result == "FAIL" for r in self.rows)

    def markdown(self) -> str:
        lines = ["| check | setting | result | measured | tolerance / goal | GPU memory peak | s |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            seconds = f"{r.seconds:.1f}" if r.seconds is not None else "-"
            lines.append(f"| {r.check} | {r.setting} | {r.result} | {r.measured} | {r.bound} | {r.memory} | {seconds} |")
        return "\n".join(lines)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


class GpuMemory:
    """Peak GPU memory of a block (``torch.cuda.max_memory_allocated``), ``-`` on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: str = "-"

    def __enter__(self) -> "GpuMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = f"{torch.cuda.max_memory_allocated(self.device) / 2**20:.0f} MiB"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------ configs

def scenes_config(sizes: Sizes, cache: Path, tasks: list[str], device: str, amp: Any = True, **train: Any):
    from branchnet.config import config_from_dict

    raw = {
        "name": "gpu-check", "seed": 0,
        "data": {"dataset": "scenes", "root": str(cache), "image_size": [sizes.image, sizes.image],
                 "splits": {"train": sizes.train, "val": sizes.val, "test": 16, "affinity": 12},
                 "options": {"max_objects": 3, "workers": None if sizes.name == "gpu" else 1}},
        "tasks": tasks,
        "model": {"backbone": "resnet18", "width": sizes.width, "output_stride": 8,
                  "head_channels": sizes.head_channels},
        "train": {"epochs": sizes.epochs, "batch_size": sizes.batch, "lr": sizes.lr, "device": device, "amp": amp,
                  "eval_every": sizes.epochs, **train},
    }
    return config_from_dict(raw, source="tools/gpu_check.py")


def network(config, partitions=None):
    from branchnet.data import build_tasks
    from branchnet.nn import NUM_STAGES, BranchedNet
    from branchnet.tree import shared_partitions

    tasks = build_tasks(config)
    torch.manual_seed(config.seed)
    parts = partitions or shared_partitions(config.task_names, NUM_STAGES)
    return BranchedNet(tasks, parts, config.model, config.image_size), tasks


def splits(config):
    from branchnet.data import build_dataset

    return [build_dataset(config, s, config.task_names) for s in ("train", "val")]


# ------------------------------------------------------------------------------------ 1. train

class _Stop(Exception):
    pass


def record_losses(tasks) -> list[torch.Tensor]:
    """Wrap each task's loss so that every training step's value is kept (on the device, no reads)."""
    kept: list[torch.Tensor] = []
    for task in tasks:
        real = task.loss

        def loss(pred, target, _real=real):
            value = _real(pred, target)
            kept.append(value.detach())
            return value
        task.loss = loss
    return kept


def per_step(kept: list[torch.Tensor], tasks: int) -> np.ndarray:
    values = torch.stack(kept).double().cpu().numpy()
    return values.reshape(-1, tasks).sum(axis=1)


def check_training(report: Report, sizes: Sizes, cache: Path, work: Path, device: torch.device) -> None:
    from branchnet.train.engine import CHECKPOINT_FILE, fit
    from branchnet.train.hooks import TrainingHook

    precisions = ["bfloat16", "float16"] if device.type == "cuda" else ["float32"]
    if device.type != "cuda":
        report.add(Row("train", "bf16 and fp16", "SKIP", "GPU only (autocast runs on CUDA)", "-"))
    rtol = RESUME_RTOL[device.type]
    for precision in precisions:
        amp = precision if precision != "float32" else False
        for kind, tasks, parts in (("single-task", ["seg"], None),
                                   ("branched", ["seg", "depth", "normals"], BRANCHED_PARTITIONS)):
            setting = f"{kind} {precision}"
            began = time.perf_counter()
            try:
                config = scenes_config(sizes, cache, tasks, str(device), amp)
                model, task_objects = network(config, parts)
                train_set, val_set = splits(config)
                kept = record_losses(task_objects)
                out = work / f"train-{kind}-{precision}"
                saved = work / f"train-{kind}-{precision}-after-epoch-1.pt"
                steps = len(train_set) // sizes.batch

                class CopyCheckpoint(TrainingHook):
                    name = "gpu-check-copy"

                    def after_step(self, ctx):
                        if ctx.step == steps + 1:  # checkpoint.pt holds epoch 1 now
                            shutil.copy(out / CHECKPOINT_FILE, saved)

                with GpuMemory(device) as memory:
                    result = fit(model, task_objects, config, out, train_set, val_set, quiet=True,
                                 label=setting, hooks=[CopyCheckpoint()])
                losses = per_step(kept, len(tasks))
                finite = bool(np.isfinite(losses).all())
                tenth = max(1, len(losses) // 10)
                first, last = losses[:tenth].mean(), losses[-tenth:].mean()
                decreasing = last < first
                # resume from epoch 1 and take one step
                resumed_dir = work / f"resume-{kind}-{precision}"
                resumed_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(saved, resumed_dir / CHECKPOINT_FILE)
                again, again_tasks = network(config, parts)
                again_kept = record_losses(again_tasks)

                class StopAfterOne(TrainingHook):
                    name = "gpu-check-stop"

                    def after_step(self, ctx):
                        raise _Stop()

                with contextlib.suppress(_Stop):
                    fit(again, again_tasks, config, resumed_dir, train_set, val_set, resume=True, quiet=True,
                        label=setting, hooks=[StopAfterOne()])
                resumed = per_step(again_kept, len(tasks))[0]
                expected = losses[steps]
                gap = abs(resumed - expected) / max(abs(expected), 1e-12)
                ok = finite and decreasing and gap <= rtol
                measured = (f"{len(losses)} steps, loss {first:.3f} -> {last:.3f}"
                            f"{'' if finite else ', NOT FINITE'}{'' if decreasing else ', NOT DECREASING'}; "
                            f"resumed step {steps + 1}: {resumed:.6f} vs {expected:.6f} (rel. {gap:.1e}); "
                            f"{result.history[-1]['images_per_second']} img/s")
                report.add(Row("train", setting, "PASS" if ok else "FAIL", measured,
                               f"finite, decreasing, resumed within rel. {rtol:g}", memory.peak,
                               time.perf_counter() - began))
            except Exception as exc:  # noqa: BLE001 - a failed check is a row, the others still run
                traceback.print_exc()
                report.add(Row("train", setting, "FAIL", one_line(exc), "-", "-", time.perf_counter() - began))


# ------------------------------------------------------------------------------------ 2. ddp

def check_ddp(report: Report, sizes: Sizes, cache: Path, work: Path, device: torch.device,
              cpu_processes: int = 0) -> None:
    """torchrun with NCCL on every GPU (``cpu_processes``: gloo on the CPU instead, to try the
    check itself on a machine without a GPU)."""
    if device.type != "cuda" and not cpu_processes:
        report.add(Row("ddp", "torchrun + NCCL", "SKIP", "GPU only (CPU processes with gloo: tests/test_distributed.py)", "-"))
        return
    from branchnet.train.engine import fit

    processes = torch.cuda.device_count() if device.type == "cuda" else cpu_processes
    backend = "nccl" if device.type == "cuda" else "gloo"
    setting = f"torchrun, {processes} process{'es' if processes > 1 else ''}, {backend.upper()}, DDP"
    began = time.perf_counter()
    try:
        if sizes.batch % processes:
            raise RuntimeError(f"batch {sizes.batch} does not split over {processes} processes")
        config = scenes_config(sizes, cache, ["seg"], str(device), epochs=2)
        model, tasks = network(config)
        single = fit(model, tasks, config, work / "ddp-single", *splits(config), quiet=True, label="single process")
        out = work / "ddp.json"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   BRANCHNET_QUIET="1", OMP_NUM_THREADS="1")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   str(Path(__file__).resolve()), "--ddp-child", str(out), "--cache", str(cache),
                   "--sizes", sizes.name, "--work", str(work / "ddp-run"), "--device", device.type]
        with GpuMemory(device):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            raise RuntimeError(f"torchrun exited with {done.returncode}: "
                               f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
        child = json.loads(out.read_text())
        main = tasks[0].main_metric
        a, b = single.val["seg"][main], child["val"]["seg"][main]
        la, lb = single.history[-1]["train_loss"]["seg"], child["train_loss"]
        rtol = DDP_RTOL[1] if processes == 1 else DDP_RTOL["more"]
        gap = max(abs(a - b) / max(abs(a), 1e-12), abs(la - lb) / max(abs(la), 1e-12))
        ok = gap <= rtol and child["backend"] == backend and child["ddp"] and child["world_size"] == processes
        measured = (f"backend {child['backend']}, world {child['world_size']}, DDP {child['ddp']}; "
                    f"val {main} {b:.4g} vs {a:.4g}, train loss {lb:.4f} vs {la:.4f} (rel. {gap:.1e})")
        report.add(Row("ddp", setting, "PASS" if ok else "FAIL", measured,
                       f"same global batch, same metrics within rel. {rtol:g}",
                       f"{child['memory']} per GPU" if child.get("memory") else "-", time.perf_counter() - began))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        report.add(Row("ddp", setting, "FAIL", one_line(exc), "-", "-", time.perf_counter() - began))


def ddp_child(args: argparse.Namespace) -> None:
    """One torchrun process: join the group (NCCL on a GPU, also as the only process), train
    with the global batch split over the processes, report (rank 0)."""
    import torch.distributed as dist

    from branchnet.atomic import atomic_write_json
    from branchnet.train.engine import fit

    cuda = args.device == "cuda"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    world = dist.get_world_size()
    sizes = {s.name: s for s in (GPU, CPU, QUICK)}[args.sizes]
    config = scenes_config(sizes, Path(args.cache), ["seg"], f"cuda:{local}" if cuda else "cpu", epochs=2,
                           batch_size=sizes.batch // world)
    model, tasks = network(config)
    captured = {}
    real = nn.parallel.DistributedDataParallel.__init__

    def spy(self, *a, **k):  # that fit wrapped the network in DDP
        captured["ddp"] = True
        real(self, *a, **k)
    nn.parallel.DistributedDataParallel.__init__ = spy
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = fit(model, tasks, config, Path(args.work), *splits(config), quiet=True, label="ddp")
    if dist.get_rank() == 0:
        atomic_write_json(args.ddp_child, {
            "backend": dist.get_backend(), "world_size": result.world_size, "ddp": captured.get("ddp", False),
            "val": result.val, "train_loss": result.history[-1]["train_loss"]["seg"],
            "memory": f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else None})
    dist.barrier()
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------ 3. rsa

class DeviceFeatures:
    """A feature source whose (K, F) blocks are made on ``device`` once (seeded per (task,
    location)) and handed out a batch at a time on ``deliver``: the same values either way.
    On the GPU the batches are views of blocks already there, as a model's features are."""

    def __init__(self, k: int, f: int, n: int, d: int, device: torch.device, deliver: torch.device,
                 batch: int = 50, seed: int = 0) -> None:
        self.tasks = [f"task{t}" for t in range(n)]
        self.locations = [f"layer{i + 1}" for i in range(d)]
        self.num_images, self.f, self.device, self.deliver, self.batch = k, f, device, deliver, batch
        latent = torch.randn((k, 16), generator=torch.Generator(device=device).manual_seed(seed), device=device)
        self.blocks = []
        for t in range(n):
            mix = 0.2 + 0.6 * t / max(1, n - 1)  # tasks differ in how much they share
            row = []
            for loc in range(d):
                shared = torch.randn((16, f), generator=self._generator(seed, 1, loc), device=device)
                own = torch.randn((16, f), generator=self._generator(seed, 2, t, loc), device=device)
                noise = torch.randn((k, f), generator=self._generator(seed, 3, t, loc), device=device)
                row.append(latent @ (mix * shared + (1 - mix) * own) * 0.5 + noise)
            self.blocks.append(row)

    def _generator(self, *key: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(hash(key) % 2**62)

    def batches(self, task: str, locations):
        t = self.tasks.index(task)
        for start in range(0, self.num_images, self.batch):
            stop = min(start + self.batch, self.num_images)
            yield [self.blocks[t][d][start:stop].to(self.deliver) for d in locations]


def check_rsa(report: Report, sizes: Sizes, device: torch.device) -> None:
    from branchnet.rsa import compute_affinity
    from branchnet.rsa import device as on_device

    k, f, n, d = sizes.rsa_images, sizes.rsa_features, sizes.rsa_tasks, sizes.rsa_locations
    cpu = torch.device("cpu")
    began = time.perf_counter()
    where = "GPU" if device.type == "cuda" else "CPU tensors (the GPU path's code)"
    setting = (f"K={k}, F={f}, N={n}, D={d} ({n * d * k * f * 4 / 2**20:.0f} MiB of features), {where} "
               "vs numpy on the CPU")
    try:
        on_it = DeviceFeatures(k, f, n, d, device, device)
        to_host = copy.copy(on_it)
        to_host.deliver = cpu  # the same blocks, each batch copied to the host
        reference = compute_affinity(to_host, device="cpu", backend="numpy", progress=False)
        compute_affinity(on_it, device=str(device), backend="torch", progress=False)  # warm-up
        with GpuMemory(device) as memory:
            sync(device)
            t0 = time.perf_counter()
            result = compute_affinity(on_it, device=str(device), backend="torch", progress=False)
            sync(device)
            seconds = time.perf_counter() - t0
        floor = 0.0
        for row in on_it.blocks:
            for x in row:
                sync(device)
                t0 = time.perf_counter()
                with on_device.exact_float32(device):
                    g = x @ x.T
                sync(device)
                floor += time.perf_counter() - t0
                del g
        gap = float(np.abs(result.affinity - reference.affinity).max())
        report.add(Row("rsa", setting, "PASS" if gap <= RSA_ATOL else "FAIL", f"max abs diff {gap:.1e}",
                       f"<= {RSA_ATOL:g}", memory.peak, time.perf_counter() - began))
        report.add(Row("rsa", f"time on {'the GPU' if device.type == 'cuda' else 'the CPU (torch path)'}", "INFO",
                       f"{seconds:.3f} s = {seconds / max(floor, 1e-9):.1f}x the bare float32 Gram products of "
                       f"the same blocks ({floor:.3f} s)",
                       "reported", memory.peak))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        report.add(Row("rsa", setting, "FAIL", one_line(exc), "-", "-", time.perf_counter() - began))


# ------------------------------------------------------------------------------------ 4. speed

class Pairs(Dataset):
    """(image, {task: label}) from tensors: what branchnet's loop reads."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, task: str) -> None:
        self.images, self.labels, self.task = images, labels, task

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], {self.task: self.labels[i]}


class BareSegmentation(nn.Module):
    """timm encoder + the ``simple`` head (3x3 conv-BN-ReLU, 1x1 conv, bilinear upsampling), no branchnet code."""

    def __init__(self, encoder: nn.Module, channels: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fuse = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
                                  nn.ReLU(inplace=True))
        self.predict = nn.Conv2d(hidden, classes, 1)

    def forward(self, x):
        y = self.predict(self.fuse(self.encoder.forward_features(x)))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def bare_loop(images, labels, classes: int, ignore: int, width: float, hidden: int, batch: int, epochs: int,
              device: torch.device, dtype: torch.dtype | None, loader: dict, lr: float,
              weight_decay: float) -> tuple[list[float], int]:
    """The plain PyTorch training loop: images/s of each epoch, and the parameter count."""
    import timm

    torch.manual_seed(0)
    kwargs = {}
    if width != 1.0:
        kwargs = {"channels": tuple(max(4, round(c * width)) for c in (64, 128, 256, 512)),
                  "stem_width": max(4, round(64 * width))}
    encoder = timm.create_model("resnet18", pretrained=False, num_classes=0, **kwargs)
    model = BareSegmentation(encoder, encoder.num_features, hidden, classes).to(device)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch,
                                       shuffle=True, drop_last=True, **loader)
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"
    rates = []
    try:
        model.train()
        for _ in range(epochs):
            sync(device)
            t0 = time.perf_counter()
            seen = 0
            for x, y in data:
                x = x.to(device, non_blocking=True, memory_format=layout)
                y = y.to(device, non_blocking=True)
                with torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext():
                    out = model(x)
                    loss = nn.functional.cross_entropy(out.float(), y.long(), ignore_index=ignore)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                seen += x.shape[0]
            sync(device)
            rates.append(seen / (time.perf_counter() - t0))
    finally:
        torch.backends.cudnn.benchmark = previous
    return rates, sum(p.numel() for p in model.parameters())


def check_speed(report: Report, sizes: Sizes, cache: Path, work: Path, device: torch.device) -> None:
    from branchnet.config import config_from_dict
    from branchnet.data import build_tasks
    from branchnet.nn import BranchedNet
    from branchnet.train.engine import fit
    from branchnet.train.loaders import LoaderSettings
    from branchnet.train.precision import Precision

    gpu = device.type == "cuda"
    size, count = sizes.speed_image, sizes.speed_images
    raw = {"name": "gpu-check-speed", "seed": 0,
           "data": {"dataset": "scenes", "root": str(cache), "image_size": [size, size]},
           "tasks": ["seg"],
           "model": {"backbone": "resnet18", "width": sizes.speed_width, "head_channels": sizes.head_channels},
           "train": {"epochs": sizes.speed_epochs, "batch_size": sizes.speed_batch, "lr": 0.001,
                     "device": str(device), "eval_every": sizes.speed_epochs}}
    config = config_from_dict(raw, source="tools/gpu_check.py")
    precision = Precision.for_device(device, True)
    setting = (f"resnet18 x{sizes.speed_width:g}, {size}x{size}, batch {sizes.speed_batch}, {precision.name}, "
               f"{count} images")
    began = time.perf_counter()
    try:
        seg = build_tasks(config)[0]
        g = torch.Generator().manual_seed(0)
        images = torch.randn((count, 3, size, size), generator=g)
        labels = torch.randint(0, seg.out_channels, (count, size, size), generator=g)
        loading = LoaderSettings.resolve(config.data, device)
        loader = {"num_workers": loading.workers, "pin_memory": loading.pin_memory}
        if loading.workers:
            loader.update(prefetch_factor=loading.prefetch, persistent_workers=loading.persistent)
        with GpuMemory(device) as bare_memory:
            bare, bare_params = bare_loop(images, labels, seg.out_channels, seg._ignore(), sizes.speed_width,
                                          sizes.head_channels, sizes.speed_batch, sizes.speed_epochs, device,
                                          precision.dtype if precision.enabled else None, loader,
                                          config.train.lr, config.train.weight_decay)
        torch.manual_seed(0)
        model = BranchedNet([seg], [[["seg"]]] * 4, config.model, config.image_size)
        ours_params = sum(p.numel() for p in model.parameters())
        with GpuMemory(device) as ours_memory:
            result = fit(model, [seg], config, work / "speed", Pairs(images, labels, "seg"),
                         Pairs(images[:sizes.speed_batch], labels[:sizes.speed_batch], "seg"), quiet=True,
                         label="speed")
        ours = [h["images_per_second"] for h in result.history]
        # the first epoch pays cuDNN autotuning and worker start-up: the best later epoch of each
        ratio = max(ours[1:] or ours) / max(bare[1:] or bare)
        same = ours_params == bare_params
        measured = (f"branchnet {max(ours[1:] or ours):.0f} img/s, bare PyTorch {max(bare[1:] or bare):.0f} img/s: "
                    f"{ratio:.2f}x; {ours_params} vs {bare_params} parameters; loader: {loading.workers} workers"
                    f"{', pinned' if loading.pin_memory else ''}")
        result_mark = ("PASS" if ratio >= SPEED_GOAL and same else "FAIL") if gpu else ("INFO" if same else "FAIL")
        report.add(Row("speed", f"training loop: {setting}", result_mark, measured,
                       f">= {SPEED_GOAL}x{'' if gpu else ' (checked on a GPU only)'}",
                       f"{ours_memory.peak} (bare {bare_memory.peak})", time.perf_counter() - began))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        report.add(Row("speed", f"training loop: {setting}", "FAIL", one_line(exc), "-", "-",
                       time.perf_counter() - began))
    check_branched_forward(report, sizes, config, device, precision)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up (autotuning, allocations)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def check_branched_forward(report: Report, sizes: Sizes, config, device: torch.device, precision) -> None:
    from branchnet.config import config_from_dict
    from branchnet.data import build_tasks
    from branchnet.nn import BranchedNet
    from branchnet.train.acceleration import cuda_settings, memory_format, prepare_model

    raw = config.to_dict()
    raw["tasks"] = ["seg", "depth", "normals"]
    cfg = config_from_dict(raw, source="tools/gpu_check.py")
    size = sizes.speed_image
    setting = f"3 tasks, tree {'-'.join(str(len(p)) for p in BRANCHED_PARTITIONS)} groups, batch {sizes.speed_batch}"
    began = time.perf_counter()
    try:
        torch.manual_seed(0)
        net = BranchedNet(build_tasks(cfg), BRANCHED_PARTITIONS, cfg.model, cfg.image_size)
        prepare_model(net, device).eval()
        x = torch.randn((sizes.speed_batch, 3, size, size), device=device)
        layout = memory_format(device)
        if layout is not None:
            x = x.contiguous(memory_format=layout)
        with GpuMemory(device) as memory, cuda_settings(device), torch.no_grad(), precision.autocast():
            whole = _timed(lambda: net(x), device, sizes.forward_repeats)
            levels = net.forward_levels(x)
            parts = 0.0
            for d in range(net.num_stages):
                for j, parent in enumerate(net.parents[d]):
                    node = net.nodes[net.node_key(d, j)]
                    inputs = x if parent < 0 else levels[d - 1][parent]
                    parts += _timed(lambda: node(inputs), device, sizes.forward_repeats)
            for task in net.task_names:
                head, features = net.heads[task], levels[-1][net.leaf[task]]
                parts += _timed(lambda: head(features, (size, size)), device, sizes.forward_repeats)
        report.add(Row("speed", f"branched forward: {setting}", "INFO",
                       f"{whole * 1e3:.2f} ms, nodes and heads alone {parts * 1e3:.2f} ms: {whole / parts:.2f}x",
                       "reported (1.00x: no cost beyond the nodes)", memory.peak, time.perf_counter() - began))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        report.add(Row("speed", f"branched forward: {setting}", "FAIL", one_line(exc), "-", "-",
                       time.perf_counter() - began))


# ------------------------------------------------------------------------------------ 5. jobs

def jobs_config(cache: Path, device: str):
    """The scenes study's network and data (configs/scenes-evaluate.yaml), JOBS_EPOCHS epochs."""
    from branchnet.config import config_from_dict

    raw = {"name": "gpu-check-jobs", "seed": 0,
           "data": {"dataset": "scenes", "root": str(cache), "image_size": [48, 48],
                    "splits": {"train": 500, "val": 150, "test": 150, "affinity": 12}},
           "tasks": JOBS_TASKS,
           "model": {"backbone": "resnet18", "width": 0.25, "output_stride": 8, "head_channels": 32},
           "train": {"epochs": JOBS_EPOCHS, "batch_size": 32, "optimizer": "adam", "lr": 0.002,
                     "weight_decay": 0.0001, "schedule": "poly", "device": device, "eval_every": JOBS_EPOCHS}}
    return config_from_dict(raw, source="tools/gpu_check.py")


def jobs_network(shared: tuple[str, str], index: int) -> float:
    """One network of the ``jobs`` check (a job of the pool, or one at a time): a random tree of
    the study's tasks, seeded by ``index``, trained on this process's GPU; returns its seconds."""
    from branchnet.nn import NUM_STAGES

    cache, work = shared
    config = jobs_config(Path(cache), "cuda")
    rng = np.random.default_rng(index)
    partitions, groups = [], [list(JOBS_TASKS)]
    for _ in range(NUM_STAGES):  # split a group now and then: a tree of 1 to 5 branches
        nxt = []
        for group in groups:
            if len(group) > 1 and rng.random() < 0.35:
                cut = int(rng.integers(1, len(group)))
                nxt += [group[:cut], group[cut:]]
            else:
                nxt.append(group)
        groups = nxt
        partitions.append([list(g) for g in groups])
    started = time.perf_counter()
    model, tasks = network(config, partitions)
    train, val = splits(config)
    from branchnet.train.engine import fit

    fit(model, tasks, config, Path(work) / f"net{index}", train, val, quiet=True, label=f"jobs {index}")
    return time.perf_counter() - started


class Utilisation:
    """The GPU's mean utilisation (%) over a block, sampled every second in a thread
    (``torch.cuda.utilization``, else ``nvidia-smi``); None when neither answers."""

    def __init__(self, device: torch.device) -> None:
        import threading

        self.device, self.samples, self.stop = device, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001  (pynvml missing)
            pass
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", str(self.device.index or 0)], capture_output=True, text=True, timeout=10)
            return float(out.stdout.strip().splitlines()[0])
        except Exception:  # noqa: BLE001
            return None

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            value = self._sample()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> "Utilisation":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)

    @property
    def mean(self) -> str:
        return f"{np.mean(self.samples):.0f} %" if self.samples else "not available"


def check_jobs(report: Report, cache: Path, work: Path, device: torch.device) -> None:
    """Networks per hour at --per-device 1, 2, 4 on one GPU against one at a time (GPU only)."""
    if device.type != "cuda":
        report.add(Row("jobs", "--per-device 1, 2, 4 vs one at a time", "SKIP",
                       "GPU only (several networks sharing one GPU)", "-"))
        return
    from branchnet.data import prepare_splits
    from branchnet.steps.jobs import JobSlots, run_pool

    index = device.index if device.index is not None else torch.cuda.current_device()
    prepare_splits(jobs_config(cache, "cuda"), ("train", "val"))
    shared = (str(cache), str(work / "jobs"))
    setting = f"scenes study's network (5 tasks, 48x48, resnet18 x0.25, batch 32), {JOBS_EPOCHS} epochs"
    began = time.perf_counter()
    try:
        count = 4
        with Utilisation(device) as busy:
            t0 = time.perf_counter()
            for i in range(count):
                jobs_network(shared, i)
            alone = 3600 * count / (time.perf_counter() - t0)
        report.add(Row("jobs", f"one at a time: {setting}", "INFO", f"{alone:.0f} networks/h, GPU busy {busy.mean}",
                       "reported", "-", time.perf_counter() - began))
        for k in PER_DEVICE:
            began = time.perf_counter()
            count = max(4, 2 * k)
            slots = JobSlots(k, 1, (f"cuda:{index}",) * k)
            with Utilisation(device) as busy:
                t0 = time.perf_counter()
                run_pool(jobs_network, shared, list(range(100 * k, 100 * k + count)), slots, quiet=True)
                rate = 3600 * count / (time.perf_counter() - t0)
            report.add(Row("jobs", f"--per-device {k}: {count} networks", "INFO",
                           f"{rate:.0f} networks/h: {rate / alone:.2f}x one at a time, GPU busy {busy.mean}",
                           "reported (worker start-up included)", "-", time.perf_counter() - began))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        report.add(Row("jobs", setting, "FAIL", one_line(exc), "-", "-", time.perf_counter() - began))


# ------------------------------------------------------------------------------------ main

def describe(device: torch.device, sizes: Sizes) -> list[str]:
    import timm

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if device.type == "cuda":
        gpu = f"{torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}, CUDA {torch.version.cuda}, " \
              f"cuDNN {torch.backends.cudnn.version()}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"
    else:
        gpu = "none (CPU run: GPU-only checks skipped)"
    from branchnet.machine import usable_cores

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [f"date: {now}", f"GPU: {gpu}",
            f"torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}",
            f"CPU: {usable_cores()} usable cores, load average {load:.2f} at start",
            f"sizes: {sizes.name}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="the smallest sizes (under a minute on a CPU)")
    parser.add_argument("--cache", default=None, help="scenes cache directory (default: a temporary one)")
    parser.add_argument("--skip", default="", help=f"checks to leave out, comma-separated: {','.join(CHECKS)}")
    parser.add_argument("--ddp-cpu", type=int, default=0, help=argparse.SUPPRESS)  # gloo processes on the CPU
    parser.add_argument("--ddp-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_child:
        ddp_child(args)
        return 0

    from branchnet.machine import thread_limit
    from branchnet.devices import resolve_device

    os.environ.setdefault("BRANCHNET_QUIET", "1")
    device = resolve_device(args.device, "--device")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(CHECKS)
    if unknown:
        parser.error(f"--skip {','.join(sorted(unknown))}: valid checks are {','.join(CHECKS)}")
    sizes = QUICK if args.quick else (GPU if device.type == "cuda" else CPU)
    header = describe(device, sizes)
    print("\n".join(header), flush=True)
    started = time.perf_counter()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="branchnet-gpu-check-") as tmp:
        work = Path(tmp)
        cache = Path(args.cache) if args.cache else work / "scenes"
        steps = {"train": lambda: check_training(report, sizes, cache, work, device),
                 "ddp": lambda: check_ddp(report, sizes, cache, work, device, args.ddp_cpu),
                 "rsa": lambda: check_rsa(report, sizes, device),
                 "speed": lambda: check_speed(report, sizes, cache, work, device),
                 "jobs": lambda: check_jobs(report, cache, work, device)}
        # --quick: tiny sizes on one thread, unhurt by a busy machine (threads that wait for each
        # other on shared cores cost ten times the CPU time there)
        with thread_limit(1) if args.quick else contextlib.nullcontext():
            for name in CHECKS:
                if name in skip:
                    report.add(Row(name, "-", "SKIP", "left out (--skip)", "-"))
                    continue
                steps[name]()
    seconds = time.perf_counter() - started
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    footer = [f"total {seconds:.0f} s; load average {load:.2f} at the end; "
              f"{sum(r.result == 'FAIL' for r in report.rows)} failed"]
    table = report.markdown()
    print()
    print(table)
    print()
    print(footer[0])
    if args.out:
        from branchnet.atomic import atomic_write_text

        command = "python tools/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
        atomic_write_text(args.out, "\n".join([f"`{command.strip()}`", "", *[f"- {h}" for h in header], "",
                                               table, "", footer[0], ""]))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

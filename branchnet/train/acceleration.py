"""How the training loop runs fast without changing what it trains: on a GPU, and in its layout
on the CPU too (docs/performance.md).

* ``channels_last``: on CUDA and the CPU the network's weights and the input batches are
  stored channels-last (NHWC), the layout cuDNN's and oneDNN's convolution kernels (and
  tensor cores under mixed precision) run fastest in. The values are the same; only strides
  differ (and with them the kernels, so results agree to float rounding).
* cuDNN autotuning (``torch.backends.cudnn.benchmark``) during :func:`fit`, whose
  training batches all have one shape (the last incomplete batch is dropped).
* ``train.compile: true``: the network is compiled with ``torch.compile``. Compilation
  happens at the first call (forward) and the first backward, so :func:`compile_network`
  runs one trial step on the first training batch and puts everything it touched back
  (BatchNorm statistics, gradients, random state); when compilation fails, one line says
  why and the network trains eagerly. Under torch.distributed every rank falls back when
  one does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from branchnet.progress import say
from branchnet import distributed as dist_utils

#: Extra keyword arguments of ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``; tests
#: put a failing ``backend`` here).
COMPILE_OPTIONS: dict[str, Any] = {}


def memory_format(device: torch.device) -> torch.memory_format | None:
    """``torch.channels_last`` on CUDA and the CPU (conv nets run fastest there in NHWC: cuDNN's
    and oneDNN's kernels; on the CPU a thin ResNet-18 trains about 20 % faster, max pooling 8x,
    ``tools/bench_study_network.py``), else None (as stored)."""
    return torch.channels_last if device.type in ("cuda", "cpu") else None


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``, its 4-D weights channels-last where :func:`memory_format` says; returns ``model``."""
    model.to(device)
    layout = memory_format(device)
    if layout is not None:
        model.to(memory_format=layout)
    return model


@contextlib.contextmanager
def cuda_settings(device: torch.device) -> Iterator[None]:
    """cuDNN autotuning for the block on CUDA (fixed input shapes), restored afterwards."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _one_line(exc: BaseException) -> str:
    """``Type: first line`` of the error (the compiler's own error when dynamo wraps one)."""
    inner = getattr(exc, "inner_exception", None)
    if isinstance(inner, BaseException):
        exc = inner
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 160:
        first = first[:157] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def compile_network(model: nn.Module, tasks: Sequence[Any], images: torch.Tensor, targets: dict[str, torch.Tensor],
                    precision: Any, label: str = "training") -> tuple[nn.Module, str | None]:
    """``torch.compile(model)`` checked by one trial forward and backward on a training batch.

    Args:
        model: the network (on its device, in train mode after the call either way).
        tasks: the tasks whose losses the trial sums.
        images, targets: one training batch on the model's device.
        precision: the loop's :class:`~branchnet.train.precision.Precision`.

    Returns:
        (the compiled module, None), or (``model``, why compilation failed) after printing
        one line. Nothing the trial touched stays changed: buffers (BatchNorm running
        statistics), gradients (None afterwards) and the CPU and CUDA random states are put
        back, so the training that follows is the one that would run without the trial.
    """
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    was_training = model.training
    reason = None
    compiled: nn.Module | None = None
    try:
        model.train()
        compiled = torch.compile(model, **COMPILE_OPTIONS)
        with precision.autocast():
            outputs = compiled(images)
            total = sum(t.loss(outputs[t.name].float(), targets[t.name]) for t in tasks)
        total.backward()
    except Exception as exc:  # noqa: BLE001 - any failure of the compiler means: train eagerly
        reason = _one_line(exc)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for p in model.parameters():
            p.grad = None
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        model.train(was_training)
    if dist_utils.is_distributed():
        device = images.device
        ok = dist_utils.all_reduce_min(torch.tensor([0 if reason else 1], device=device))
        if int(ok.item()) == 0 and reason is None:
            reason = "compilation failed on another rank"
    if reason is not None:
        say(f"{label}: torch.compile failed ({reason}); training without it")
        return model, reason
    return compiled, None

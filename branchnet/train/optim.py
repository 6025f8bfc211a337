"""The optimiser (``train.optimizer``) and the learning-rate schedule (``train.schedule``):
two registries that own their names; an unknown name is a :class:`~branchnet.errors.BadInput`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from branchnet.registry import Registry
from branchnet.schema import TrainConfig

#: ``train.optimizer``: name -> (parameters or parameter groups, the train section) -> optimiser.
OPTIMIZERS: Registry[Callable[[Iterable[Any], TrainConfig], torch.optim.Optimizer]] = Registry("optimizer")
#: ``train.schedule``: name -> learning-rate factor at progress p = step / total steps in [0, 1].
SCHEDULES: Registry[Callable[[float], float]] = Registry("schedule")


def fused(parameters: list[Any]) -> bool:
    """Whether torch's fused kernel can update ``parameters`` (tensors or parameter groups): all
    floating point on one CPU or CUDA device. It updates every tensor in one call, where the
    default loops over them (a thin ResNet-18's 60-odd small tensors: about 4x faster on a CPU);
    the update is the same to float rounding."""
    tensors = [t for item in parameters for t in (item["params"] if isinstance(item, dict) else [item])]
    devices = {t.device for t in tensors}
    return (len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda")
            and all(t.is_floating_point() for t in tensors))


@OPTIMIZERS.register("adam")
def adam(parameters: Iterable[Any], train: TrainConfig) -> torch.optim.Optimizer:
    parameters = list(parameters)
    return torch.optim.Adam(parameters, lr=train.lr, weight_decay=train.weight_decay, fused=fused(parameters))


@OPTIMIZERS.register("adamw")
def adamw(parameters: Iterable[Any], train: TrainConfig) -> torch.optim.Optimizer:
    parameters = list(parameters)
    return torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay, fused=fused(parameters))


@OPTIMIZERS.register("sgd")
def sgd(parameters: Iterable[Any], train: TrainConfig) -> torch.optim.Optimizer:
    """SGD with ``train.momentum``."""
    parameters = list(parameters)
    return torch.optim.SGD(parameters, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
                           fused=fused(parameters))


@SCHEDULES.register("poly")
def poly(progress: float) -> float:
    """(1 - p)^0.9."""
    return (1.0 - progress) ** 0.9


@SCHEDULES.register("cosine")
def cosine(progress: float) -> float:
    """(1 + cos(pi p)) / 2."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.register("constant")
def constant(progress: float) -> float:
    return 1.0


def lr_multiplier(step: int, total: int, schedule: str) -> float:
    """Learning-rate factor at optimiser step ``step`` of ``total`` under ``schedule``
    (:data:`SCHEDULES`), with p = step / total capped at 1."""
    progress = min(step / max(total, 1), 1.0)
    return SCHEDULES.lookup(schedule)(progress)


def build_optimizer(parameters, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``train.optimizer`` (:data:`OPTIMIZERS`) over ``parameters`` (parameter groups allowed)."""
    return OPTIMIZERS.lookup(train.optimizer)(parameters, train)


def optimizer_for(model: torch.nn.Module, weighting: torch.nn.Module,
                  train: TrainConfig) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """The optimiser of ``model``'s trainable parameters and, in a group of their own without weight
    decay, the loss weighting's (uncertainty weighting's log-variances); returns it with the latter."""
    params: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    weighting_params = [p for p in weighting.parameters() if p.requires_grad]
    if weighting_params:
        params.append({"params": weighting_params, "weight_decay": 0.0})
    return build_optimizer(params, train), weighting_params

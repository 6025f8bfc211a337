"""The optimiser (``train.optimizer``) and the learning-rate schedule (``train.schedule``)."""

from __future__ import annotations

import math

import torch

from branchnet.config import TrainConfig


def lr_multiplier(step: int, total: int, schedule: str) -> float:
    """Learning-rate factor at optimiser step ``step`` of ``total``: ``poly`` (1 - p)^0.9,
    ``cosine`` (1 + cos(pi p)) / 2, or ``constant`` 1, with p = step / total."""
    progress = min(step / max(total, 1), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_optimizer(parameters, train: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over ``parameters`` (parameter groups allowed)."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.Adam(parameters, lr=train.lr, weight_decay=train.weight_decay)

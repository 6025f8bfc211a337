"""What the training loop does with a loss weighting, on a tiny shared layer: imported by
tests/test_contracts.py and by the two gloo ranks it starts (so they import nothing else)."""

from __future__ import annotations

import torch

from branchnet.train.weighting import WEIGHTINGS, build_weighting

NAMES = ["a", "b", "c"]


def losses(weight: torch.Tensor, rank: int = 0) -> dict[str, torch.Tensor]:
    """A loss per task through the shared layer ``weight`` (4, 3), on data that differs by rank."""
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 10 + rank
    return {t: ((weight.t() @ x[i]) ** 2).mean() * (i + 1) for i, t in enumerate(NAMES)}


def weighting(name: str, shared: torch.nn.Parameter):
    """Weighting ``name`` of the three tasks (task a weighs 2), GradNorm on ``shared``."""
    return build_weighting(name, NAMES, {"a": 2.0}, shared if WEIGHTINGS[name].needs_shared_layer else None)


def run(scheme, shared: torch.nn.Parameter, rank: int = 0, steps: int = 3, average=None, mean=None) -> None:
    """``steps`` optimiser steps and an epoch end. Under torch.distributed ``average(parameters)``
    averages the gradients over ranks (DDP and the loop's average of the weighting's own) and
    ``mean(tensor)`` the epoch's mean losses."""
    optimizer = torch.optim.SGD([shared, *scheme.parameters()], lr=0.01)
    for _ in range(steps):
        total = scheme.combine(losses(shared, rank))
        optimizer.zero_grad()
        total.backward()
        if average is not None:
            average([shared, *(p for p in scheme.parameters() if p.requires_grad)])
        optimizer.step()
    epoch = torch.stack([v.detach() for v in losses(shared, rank).values()]).double()
    epoch = mean(epoch) if mean is not None else epoch
    scheme.epoch_end(dict(zip(NAMES, epoch.tolist())))

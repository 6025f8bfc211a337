"""One optimisation step of the loop, in two halves around the divergence guard's look at the
losses: the forward pass to the weighted total loss, then backward, gradient averaging of the
weighting's own parameters, clipping and the optimiser (through the gradient scaler for
float16). Nothing here reads a value back from the device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from branchnet import distributed as dist_utils
from branchnet.train.precision import Precision
from branchnet.train.weighting import LossWeighting


def forward_losses(net: nn.Module, tasks: Sequence[Any], images: torch.Tensor, targets: Mapping[str, torch.Tensor],
                   weighting: LossWeighting, precision: Precision) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({task: its loss on the batch}, the weighted total), under the loop's autocast; images
    (B, 3, H, W) and targets on the device."""
    with precision.autocast():
        outputs = net(images)
        losses = {t.name: t.loss(outputs[t.name].float(), targets[t.name]) for t in tasks}
        total = weighting.combine(losses)
    return losses, total


def backward_and_step(total: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                      weighting_params: Sequence[nn.Parameter], clip_grad: float) -> None:
    """Gradients of ``total`` (DDP averages the network's over ranks; the weighting's parameters
    are averaged here), clipped to ``clip_grad`` (0 = off), then one optimiser step."""
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is not None:
        precision.scaler.scale(total).backward()
        precision.scaler.unscale_(optimizer)
    else:
        total.backward()
    dist_utils.average_gradients(weighting_params)
    if clip_grad > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if precision.scaler is not None:
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        optimizer.step()

"""Divergence detection without a host synchronisation per step.

Every step records, on the device, the first step at which each task's loss was not finite
(:meth:`DivergenceGuard.observe`, a few element-wise ops, nothing read back). The flags are
read at the loop's sync points (:meth:`DivergenceGuard.check`): on one process whenever the
progress view refreshes (every :data:`SYNC_SECONDS` at most) and at each epoch's end; under
torch.distributed every :data:`DDP_CHECK_STEPS` steps and at each epoch's end, as a collective
(the earliest bad step over all ranks), so every rank stops at the same point and none is
left waiting in a collective. A diverged run stops with :class:`~branchnet.errors.BadInput`
naming the task, epoch and step; it never reaches the save, so no ``model.pt`` claims to be
trained, and the checkpoint of the last good epoch stays for inspection.
"""

from __future__ import annotations

from typing import Sequence

import torch

from branchnet.errors import BadInput
from branchnet import distributed as dist_utils

#: On one process, the loss and the divergence flags are read at most this often (seconds).
SYNC_SECONDS = 2.0
#: Under torch.distributed the flags are all-reduced every this many steps (a fixed count,
#: the same on every rank), and at each epoch's end.
DDP_CHECK_STEPS = 50

_NONE = torch.iinfo(torch.int64).max


class Diverged(BadInput):
    """A training loss became NaN or infinite."""


class DivergenceGuard:
    """The first non-finite step of each task, kept on ``device``.

    Args:
        tasks: task names, in the order of the loss vectors given to :meth:`observe`.
        device: where the losses live.
    """

    def __init__(self, tasks: Sequence[str], device: torch.device) -> None:
        self.tasks = list(tasks)
        self.first_bad = torch.full((len(self.tasks),), _NONE, dtype=torch.int64, device=device)

    def observe(self, losses: torch.Tensor, step: int) -> None:
        """Record step ``step``'s loss vector (T,) (no host synchronisation)."""
        bad = ~torch.isfinite(losses.detach())
        self.first_bad = torch.where(bad, torch.minimum(self.first_bad, torch.full_like(self.first_bad, step)),
                                     self.first_bad)

    def check(self, steps_per_epoch: int, lr: float) -> None:
        """Read the flags (a sync point; a collective under torch.distributed) and raise
        :class:`Diverged` at the first non-finite loss seen on any rank."""
        first = self.first_bad.clone()
        if dist_utils.is_distributed():
            first = dist_utils.all_reduce_min(first)
        values = first.tolist()
        bad = [(step, task) for task, step in zip(self.tasks, values) if step != _NONE]
        if not bad:
            return
        step, task = min(bad)
        epoch, within = divmod(step, max(steps_per_epoch, 1))
        raise Diverged(f"training diverged: the loss of task '{task}' became NaN or infinite at epoch {epoch + 1}, "
                       f"step {within + 1} (step {step + 1} of the run); lower train.lr (now {lr:g}) or set "
                       "train.clip_grad; no model was saved (the last good epoch's checkpoint.pt is kept)")

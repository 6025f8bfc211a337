"""torch.distributed plumbing: one process per device under ``torchrun``.

``torchrun --nproc_per_node=K -m branchnet train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_from_env` then joins the process group (NCCL on GPUs, gloo
on the CPU). Only rank 0 writes files or prints progress.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str = "auto") -> bool:
    """Join the process group when launched by torchrun; True when distributed."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of a dataset, without padding (for evaluation).

    Unlike ``DistributedSampler`` it never repeats an item, so split-level metrics summed
    over ranks count every image exactly once.
    """

    def __init__(self, length: int, rank_: int, world: int) -> None:
        self.indices = list(range(rank_, length, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _reduce_device(tensor: torch.Tensor) -> torch.device:
    """Where a collective runs: the tensor's device for NCCL (cuda), the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(tensor: torch.Tensor, op) -> torch.Tensor:
    if not is_distributed():
        return tensor
    work = tensor.detach().to(_reduce_device(tensor)).clone()
    dist.all_reduce(work, op=op)
    return work.to(tensor.device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks (``tensor`` itself outside torch.distributed)."""
    return _all_reduce(tensor, dist.ReduceOp.SUM)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``tensor`` over all ranks."""
    if not is_distributed():
        return tensor
    return all_reduce_sum(tensor.double()).div(world_size()).to(tensor.dtype)


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise minimum of ``tensor`` over all ranks."""
    return _all_reduce(tensor, dist.ReduceOp.MIN)


def average_gradients(parameters) -> None:
    """Average the gradients of ``parameters`` over all ranks (for parameters DDP does not
    wrap, such as the loss weighting's)."""
    if not is_distributed():
        return
    for p in parameters:
        if p.grad is not None:
            p.grad.copy_(all_reduce_mean(p.grad))

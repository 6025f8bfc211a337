"""Data loaders for training (seeded per epoch, sharded over ranks) and evaluation."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from branchnet.errors import BadInput
from branchnet.train import distributed as dist_utils


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (independent of how many epochs ran before a resume)."""
    return (seed * 1_000_003 + epoch * 7919) % (2 ** 31)


def make_loader(dataset: Dataset, batch_size: int, workers: int, *, train: bool, seed: int = 0,
                epoch: int = 0, device: torch.device | None = None, shard: bool = True) -> DataLoader:
    """A loader over this process's share of ``dataset``.

    Training: shuffled with a generator seeded by (seed, epoch), last incomplete batch
    dropped (BatchNorm needs more than one sample); under torch.distributed each rank
    takes every world-th item of the same permutation. Evaluation: in order, each rank
    its own shard, nothing repeated (``shard=False``: every item, for work one rank does alone).
    """
    world, rank = (dist_utils.world_size(), dist_utils.rank()) if shard or train else (1, 0)
    pin = device is not None and device.type == "cuda"
    if train:
        set_epoch(dataset, epoch, seed)
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


def set_epoch(dataset: Dataset, epoch: int, seed: int) -> None:
    """Tell ``dataset`` (or the dataset a ``Subset`` wraps) which epoch it serves, so that its
    random augmentation depends only on (seed, epoch, index) and a resumed run redraws it."""
    while dataset is not None:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch, seed)
            return
        dataset = getattr(dataset, "dataset", None)


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (a tensor or a dict of them, nested) on ``device``, copied asynchronously."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch

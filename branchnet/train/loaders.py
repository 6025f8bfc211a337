"""Data loaders for training (seeded per epoch, sharded over ranks) and evaluation.

How batches are loaded comes from the config (``data.workers``, ``data.loader``;
:class:`LoaderSettings`) and never changes what is trained: a run with worker processes,
pinned memory or persistent workers sees the same batches in the same order as one
loading in the main process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from branchnet.machine import usable_cores
from branchnet.errors import BadInput
from branchnet import distributed as dist_utils

#: The automatic ``data.workers`` starts at most this many worker processes per training process.
MAX_AUTO_WORKERS = 8


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (independent of how many epochs ran before a resume)."""
    return (seed * 1_000_003 + epoch * 7919) % (2 ** 31)


def auto_workers(device: torch.device | None) -> int:
    """The automatic ``data.workers``: on CUDA, the cores this process may use (shared by the
    ``LOCAL_WORLD_SIZE`` processes of a torchrun node) less one for the loop, at most
    :data:`MAX_AUTO_WORKERS`; on the CPU 0, as the training itself uses every core."""
    if device is None or device.type != "cuda":
        return 0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(0, min(MAX_AUTO_WORKERS, usable_cores() // local - 1))


@dataclass(frozen=True)
class LoaderSettings:
    """Worker processes, pinned memory, prefetch depth and persistence of a loader."""

    workers: int = 0
    pin_memory: bool = False
    prefetch: int = 2
    persistent: bool = False

    @classmethod
    def resolve(cls, data: Any = None, device: torch.device | None = None) -> "LoaderSettings":
        """The settings of a config's ``data`` section (``data.workers``, ``data.loader``) on ``device``;
        None values are the automatic ones (workers: :func:`auto_workers`, pinned memory on
        CUDA, persistent workers whenever there are workers)."""
        workers = getattr(data, "workers", None)
        loader = getattr(data, "loader", None)
        workers = auto_workers(device) if workers is None else int(workers)
        if workers < 0:
            raise BadInput(f"data.workers must be 0 or more worker processes, got {workers}")
        pin = getattr(loader, "pin_memory", None)
        pin = device is not None and device.type == "cuda" if pin is None else bool(pin)
        persistent = getattr(loader, "persistent", None)
        persistent = workers > 0 if persistent is None else bool(persistent) and workers > 0
        prefetch = int(getattr(loader, "prefetch", 2) or 2)
        if prefetch < 1:
            raise BadInput(f"data.loader.prefetch must be at least 1 batch per worker, got {prefetch}")
        if pin and not torch.cuda.is_available():
            pin = False  # nothing to copy to: pinning would only cost
        return cls(workers, pin, prefetch, persistent)

    def loader_kwargs(self, persistent: bool = False) -> dict[str, Any]:
        """Keyword arguments of :class:`torch.utils.data.DataLoader`."""
        out: dict[str, Any] = {"num_workers": self.workers, "pin_memory": self.pin_memory}
        if self.workers > 0:
            out["prefetch_factor"] = self.prefetch
            out["persistent_workers"] = persistent and self.persistent
        return out


def _settings(workers: int | None | LoaderSettings, device: torch.device | None) -> LoaderSettings:
    if isinstance(workers, LoaderSettings):
        return workers
    return LoaderSettings.resolve(_Workers(workers), device)


@dataclass
class _Workers:  # a ``data`` section with only ``workers`` (make_loader's int argument)
    workers: int | None


def make_loader(dataset: Dataset, batch_size: int, workers: int | None | LoaderSettings, *, train: bool,
                seed: int = 0, epoch: int = 0, device: torch.device | None = None, shard: bool = True) -> DataLoader:
    """A loader over this process's share of ``dataset``.

    Training: shuffled with a generator seeded by (seed, epoch), last incomplete batch
    dropped (BatchNorm needs more than one sample); under torch.distributed each rank
    takes every world-th item of the same permutation. Evaluation: in order, each rank
    its own shard, nothing repeated (``shard=False``: every item, for work one rank does alone).
    ``workers`` is a :class:`LoaderSettings`, or a number of worker processes (None:
    automatic) with the other settings automatic for ``device``.
    """
    settings = _settings(workers, device)
    world, rank = (dist_utils.world_size(), dist_utils.rank()) if shard or train else (1, 0)
    if train:
        set_epoch(dataset, epoch, seed)
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        if world > 1:
            order = torch.randperm(len(dataset), generator=generator).tolist()
            usable = len(order) - len(order) % world
            sampler = order[rank:usable:world]
        else:
            sampler = RandomSampler(dataset, generator=generator)
        _check_batches(dataset, batch_size, world)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                          **settings.loader_kwargs(persistent=False))
    sampler = dist_utils.ShardSampler(len(dataset), rank, world)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **settings.loader_kwargs(persistent=False))


def _check_batches(dataset: Dataset, batch_size: int, world: int) -> None:
    if len(dataset) // world < batch_size:
        raise BadInput(f"the training split has {len(dataset)} images, fewer than one batch of "
                       f"{batch_size} per process; lower train.batch_size or enlarge data.splits.train")


class TrainLoader:
    """The training batches of a whole :func:`~branchnet.train.engine.fit`, epoch by epoch.

    ``loader.epoch(e)`` iterates epoch ``e``'s batches: the same images in the same order
    as :func:`make_loader` with ``train=True`` (seeded by (seed, e), sharded over ranks).
    With persistent workers one DataLoader serves every epoch, its worker processes kept:
    each index carries its epoch, so the workers' copies of the dataset draw that epoch's
    augmentation; the loader's own seed comes from a generator of its own, and one value is
    drawn from torch's global generator per epoch as a fresh loader would, so the run's
    random numbers do not depend on the loader settings.
    """

    def __init__(self, dataset: Dataset, batch_size: int, settings: LoaderSettings, seed: int) -> None:
        self.dataset, self.batch_size, self.settings, self.seed = dataset, batch_size, settings, seed
        world = dist_utils.world_size()
        _check_batches(dataset, batch_size, world)
        per_rank = len(dataset) // world if world > 1 else len(dataset)
        self._length = per_rank // batch_size
        self._loader: DataLoader | None = None
        self._sampler: _EpochSampler | None = None
        if settings.workers > 0 and settings.persistent:
            self._sampler = _EpochSampler(len(dataset), seed, dist_utils.rank(), world)
            self._loader = DataLoader(_EpochItems(dataset, seed), batch_size=batch_size, sampler=self._sampler,
                                      drop_last=True, generator=torch.Generator().manual_seed(seed),
                                      **settings.loader_kwargs(persistent=True))

    def __len__(self) -> int:
        return self._length

    def epoch(self, epoch: int) -> DataLoader:
        """The loader of epoch ``epoch`` (iterate it once)."""
        if self._loader is None:
            return make_loader(self.dataset, self.batch_size, self.settings, train=True, seed=self.seed,
                               epoch=epoch)
        set_epoch(self.dataset, epoch, self.seed)
        self._sampler.epoch = epoch
        torch.empty((), dtype=torch.int64).random_()  # what a fresh loader's iterator draws
        return self._loader

    def close(self) -> None:
        """Stop the persistent worker processes (if any)."""
        if self._loader is not None:
            iterator = getattr(self._loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
            self._loader._iterator = None


class _EpochSampler(Sampler):
    """Yields ``(epoch, index)``: the permutation of :func:`make_loader` for ``self.epoch``."""

    def __init__(self, length: int, seed: int, rank: int, world: int) -> None:
        self.length, self.seed, self.rank, self.world = length, seed, rank, world
        self.epoch = 0

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.length, generator=generator).tolist()  # = RandomSampler's
        if self.world > 1:
            usable = len(order) - len(order) % self.world
            order = order[self.rank:usable:self.world]
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self._order()])

    def __len__(self) -> int:
        return self.length // self.world if self.world > 1 else self.length


class _EpochItems(Dataset):
    """``dataset`` indexed by ``(epoch, index)``: tells its copy the epoch before reading."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        if epoch != self._epoch:
            set_epoch(self.dataset, epoch, self.seed)
            self._epoch = epoch
        return self.dataset[index]


def set_epoch(dataset: Dataset, epoch: int, seed: int) -> None:
    """Tell ``dataset`` (or the dataset a ``Subset`` wraps) which epoch it serves, so that its
    random augmentation depends only on (seed, epoch, index) and a resumed run redraws it."""
    while dataset is not None:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch, seed)
            return
        dataset = getattr(dataset, "dataset", None)


def to_device(batch: Any, device: torch.device, memory_format: torch.memory_format | None = None) -> Any:
    """``batch`` (a tensor or a dict of them, nested) on ``device``, copied asynchronously;
    4-D tensors in ``memory_format`` when given (images in channels_last for conv nets)."""
    if isinstance(batch, torch.Tensor):
        if memory_format is not None and batch.ndim == 4:
            return batch.to(device, non_blocking=True, memory_format=memory_format)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device, memory_format) for k, v in batch.items()}
    return batch

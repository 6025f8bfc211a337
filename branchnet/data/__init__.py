"""Datasets: each maps an image to ``{task: target}`` for the tasks a config picks.

A dataset is a :class:`MultiTaskDataset` subclass registered with
:func:`register_dataset`. It declares the tasks it can provide
(:meth:`MultiTaskDataset.available_tasks`, a :class:`~branchnet.tasks.TaskSpec` each)
and returns, per item, a normalised float image (3, H, W) and a dict of targets in the
conventions of :mod:`branchnet.tasks`. Splits are ``train``, ``val``, ``test`` and a
held-out ``affinity`` split used only to measure task affinity.

The ``train`` split is augmented when ``data.augment`` asks for it
(:mod:`branchnet.data.augment`); the draws of item i depend on (config seed, epoch,
i), and the trainer calls :meth:`MultiTaskDataset.set_epoch` before each epoch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.utils.data import Dataset

from branchnet.schema import Config, DataConfig
from branchnet.errors import BadInput, unknown_choice
from branchnet.tasks import Task, TaskSpec, make_task

if TYPE_CHECKING:  # pragma: no cover
    from branchnet.data.augment import Augmenter

SPLITS = ("train", "val", "test", "affinity")

#: ImageNet statistics: timm backbones (and local pretrained weights) expect them.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class MultiTaskDataset(Dataset):
    """Base class of branchnet datasets.

    Subclasses set ``name``, implement :meth:`available_tasks`, ``__len__`` and
    :meth:`load` (raw uint8 image and targets of one item); augmentation (training
    split) and normalisation happen here. A reader may set :attr:`label_kinds` (a
    task's label kind for augmentation where its type's default does not fit) and
    override :meth:`augment_unsafe`.
    """

    name: ClassVar[str]
    #: Label kind for augmentation by task name, where the type's kind does not fit
    #: (e.g. Cityscapes' disparity in pixels); see :mod:`branchnet.data.augment`.
    label_kinds: ClassVar[dict[str, str]] = {}

    def __init__(self, data: DataConfig, split: str, tasks: list[str]) -> None:
        if split not in SPLITS:
            raise unknown_choice("split", split, SPLITS)
        offered = self.available_tasks(data.options)
        for task in tasks:
            if task not in offered:
                raise unknown_choice(f"task for dataset {self.name}", task, offered)
        self.data = data
        self.split = split
        self.tasks = list(tasks)
        self.image_size = (int(data.image_size[0]), int(data.image_size[1]))
        self._mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGE_STD).view(3, 1, 1)
        #: Seed and epoch of the augmentation draws (see :meth:`set_epoch`).
        self.seed = 0
        self.epoch = 0
        self.augmenter: Augmenter | None = None
        if split == "train" and data.augment is not None and data.augment.active:
            self.augmenter = self._make_augmenter(offered)

    def _make_augmenter(self, offered: dict[str, TaskSpec]) -> "Augmenter":
        from branchnet.data.augment import Augmenter, check_safe, label_rule
        from branchnet.tasks import TASK_TYPES

        check_safe(self.data.augment, self.augment_unsafe(), self.name)
        rules = {}
        for task in self.tasks:
            spec = offered[task]
            defaults = getattr(TASK_TYPES.get(spec.type), "default_options", {})
            rules[task] = label_rule(task, spec.type, self.label_kinds.get(task), spec.ignore_index,
                                     {**defaults, **spec.options})
        return Augmenter(self.data.augment, self.image_size, rules)

    def augment_unsafe(self) -> dict[str, set[str]]:
        """Configured tasks whose labels a transform would falsify: {"flip" | "geometry" | "jitter": tasks}."""
        return {}

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Draw the augmentation of the coming epoch (and, given, from the config ``seed``)."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    @classmethod
    def available_tasks(cls, options: dict[str, Any]) -> dict[str, TaskSpec]:  # pragma: no cover - abstract
        """Every task this dataset can provide, by name."""
        raise NotImplementedError

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover - abstract
        """Item ``index``: uint8 image (3, H, W) and {task: target} for ``self.tasks``."""
        raise NotImplementedError

    def normalize(self, image_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in 0..255) (3, H, W) -> float32 (3, H, W) normalised with ImageNet statistics."""
        return (image_uint8.float() / 255.0 - self._mean) / self._std

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, targets = self.load(index)
        if self.augmenter is not None:
            image, targets = self.augmenter(image, targets, self.seed, self.epoch, index)
        return self.normalize(image), targets


DATASETS: dict[str, str] = {
    # name -> "module:Class"; imported on first use so that optional readers cost nothing
    "scenes": "branchnet.data.scenes:ScenesDataset",
    "cityscapes": "branchnet.data.cityscapes:CityscapesDataset",
    "nyud": "branchnet.data.nyud:NYUDDataset",
    "celeba": "branchnet.data.celeba:CelebADataset",
    "taskonomy": "branchnet.data.taskonomy:TaskonomyDataset",
    "multimnist": "branchnet.data.multimnist:MultiMNISTDataset",
}
_LOADED: dict[str, type[MultiTaskDataset]] = {}


def register_dataset(name: str, target: str) -> None:
    """Make a dataset class available as ``name`` (``target`` is ``"module:Class"``)."""
    DATASETS[name] = target


def dataset_class(name: str) -> type[MultiTaskDataset]:
    """The dataset class registered as ``name``; :class:`BadInput` listing valid names."""
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    if name not in _LOADED:
        module, _, cls = DATASETS[name].partition(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)
    return _LOADED[name]


def build_tasks(config: Config) -> list[Task]:
    """The config's tasks bound to their types (dataset defaults, config overrides)."""
    offered = dataset_class(config.data.dataset).available_tasks(config.data.options)
    tasks = []
    for entry in config.tasks:
        if entry.name not in offered:
            raise unknown_choice(f"task for dataset {config.data.dataset}", entry.name, offered)
        tasks.append(make_task(entry.name, offered[entry.name], entry.type, entry.options))
    return tasks


def build_dataset(config: Config, split: str, tasks: list[str] | None = None) -> MultiTaskDataset:
    """The ``split`` of the config's dataset, returning targets for ``tasks`` (default: all)."""
    cls = dataset_class(config.data.dataset)
    dataset = cls(config.data, split, tasks if tasks is not None else config.task_names)
    dataset.seed = config.seed
    return dataset


def select_tasks(config: Config, names: list[str] | tuple[str, ...] | None) -> list[Task]:
    """The config's tasks, or the subset ``names`` in that order (each must be one of the config's)."""
    tasks = build_tasks(config)
    if not names:
        return tasks
    by_name = {t.name: t for t in tasks}
    for name in names:
        if name not in by_name:
            raise unknown_choice("task of this config", name, by_name)
    if len(set(names)) != len(names):
        raise BadInput("a task is named twice; give each task once")
    return [by_name[n] for n in names]


def prepare_splits(config: Config, splits: tuple[str, ...] = ("train", "val", "test"),
                   tasks: list[str] | None = None) -> None:
    """Make sure the splits exist (generated and cached, or readable for ``tasks``) before every
    torch.distributed rank opens them: rank 0 prepares, the others wait."""
    from branchnet import distributed

    if distributed.is_main():
        for split in splits:
            build_dataset(config, split, list(tasks) if tasks is not None else None)
    distributed.barrier()

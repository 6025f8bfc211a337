"""The dataset interface: :class:`MultiTaskDataset` (an image and ``{task: target}`` per item, with
augmentation and normalisation), the splits and the image statistics."""


from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.utils.data import Dataset

from branchnet.errors import unknown_choice
from branchnet.schema import DataConfig
from branchnet.tasks import TaskSpec

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

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

from branchnet.data.base import IMAGE_MEAN, IMAGE_STD, SPLITS, MultiTaskDataset
from branchnet.data.datasets import (DATASETS, build_dataset, build_tasks, dataset_class, prepare_splits,
                                     register_dataset, select_tasks)

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "SPLITS", "MultiTaskDataset", "DATASETS", "build_dataset", "build_tasks",
           "dataset_class", "prepare_splits", "register_dataset", "select_tasks"]

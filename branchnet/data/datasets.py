"""The registry of datasets (:data:`DATASETS`, name -> ``"module:Class"``, imported on first use) and
the calls that turn a config into its tasks and splits."""

from __future__ import annotations

import importlib

from branchnet.data.base import MultiTaskDataset
from branchnet.errors import BadInput, unknown_choice
from branchnet.schema import Config
from branchnet.tasks import Task, make_task


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

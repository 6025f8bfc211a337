"""The task interface: :class:`TaskSpec` (what a dataset offers), :class:`Task` (a name bound
to a type: head shape, loss, metrics, main metric) and the registry of task types.

A dataset describes each task it offers with a :class:`TaskSpec` (type name, number of
classes, ignore index). :func:`make_task` turns a spec into a :class:`Task` bound to a
task name. The trainer only calls the :class:`Task` interface (``out_channels``,
``loss_terms``, ``new_metrics``), so a new task type plugs in by subclassing
:class:`Task` and decorating it with :func:`register_task_type` (the built-in types are
in :mod:`branchnet.tasks.types` and :mod:`branchnet.tasks.extra`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from branchnet.errors import BadInput, unknown_choice
from branchnet.tasks.metrics import Accumulator, MeanAccumulator


@dataclass(frozen=True)
class TaskSpec:
    """What a dataset says about one task it can provide."""

    type: str
    num_classes: int | None = None
    ignore_index: int | None = None
    description: str = ""
    #: Default type options (a config's ``options`` override them).
    options: dict[str, Any] = field(default_factory=dict)


class TaskMetrics:
    """The split-level loss and metrics of one task; ``compute()`` -> {metric: value}."""

    def __init__(self, task: "Task", accumulator: Accumulator) -> None:
        self.task = task
        self.loss = MeanAccumulator("loss")
        self.accumulator = accumulator

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        total, count = self.task.loss_terms(pred.float(), target)
        self.loss.update(total, count)
        self.task.update_metrics(self.accumulator, pred.float(), target)

    def all_reduce(self) -> None:
        self.loss.all_reduce()
        self.accumulator.all_reduce()

    def compute(self) -> dict[str, float]:
        return {**self.accumulator.compute(), **self.loss.compute()}


class Task:
    """A task of an experiment: a name bound to a task type and its options.

    Class attributes a task type sets:
        type_name: registry name.
        dense: True for per-pixel outputs (dense head), False for image-level (pooled head).
        main_metric: the metric the multi-task delta uses.
        higher_is_better: direction of ``main_metric``.
    """

    type_name: ClassVar[str]
    dense: ClassVar[bool]
    main_metric: ClassVar[str]
    higher_is_better: ClassVar[bool]
    #: Options a config may set, with defaults.
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, spec: TaskSpec, options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.spec = spec
        given = {**spec.options, **(options or {})}
        unknown = sorted(set(given) - set(self.default_options))
        if unknown:
            valid = ", ".join(self.default_options) or "none"
            raise BadInput(f"task '{name}': unknown option '{unknown[0]}' for type {self.type_name}; valid: {valid}")
        self.options = {**self.default_options, **given}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def out_channels(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss_terms(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of per-element losses, number of elements): exact split means add up."""
        raise NotImplementedError  # pragma: no cover

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch's valid elements (what training minimises)."""
        total, count = self.loss_terms(pred.float(), target)
        return total / count.clamp_min(1)

    def new_metrics(self) -> TaskMetrics:
        return TaskMetrics(self, self.make_accumulator())

    def example_target(self, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """A random target of one (H, W) image in the type's convention (the tables of
        :mod:`branchnet.tasks.types` and :mod:`branchnet.tasks.extra`): what a dataset returns, with
        an ignored or missing element where the type has them. The contract tests
        (tests/test_contracts.py) hold every registered type and every dataset reader to it."""
        raise NotImplementedError(f"task type {self.type_name} defines no example_target")  # pragma: no cover

    def check_target(self, target: Any, size: tuple[int, int], where: str) -> None:
        """Refuse a dataset whose targets for this task are not what the type expects (shape and
        dtype of :meth:`example_target`): a task configured with another type than its dataset's
        targets (``tasks: [{name: seg, type: depth}]``) would otherwise fail inside the loss, after
        the data were built. ``where`` names the data (``split 'train'``)."""
        expected = self.example_target(tuple(size), torch.Generator().manual_seed(0))
        got = (tuple(target.shape), target.dtype) if isinstance(target, torch.Tensor) else None
        if got != (tuple(expected.shape), expected.dtype):
            shown = f"{target.dtype} {tuple(target.shape)}" if got is not None else type(target).__name__
            raise BadInput(f"task '{self.name}' is of type {self.type_name}, whose targets are "
                           f"{expected.dtype} {tuple(expected.shape)}, but {where} gives {shown}; give the task "
                           "the type of its dataset's targets (or drop 'type' to take the dataset's)")

    def make_accumulator(self) -> Accumulator:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_metrics(self, acc: Accumulator, pred: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError  # pragma: no cover

    def describe(self) -> dict[str, Any]:
        """Plain description stored in checkpoints and metrics files."""
        return {"name": self.name, "type": self.type_name, "num_classes": self.spec.num_classes,
                "ignore_index": self.spec.ignore_index, "options": dict(self.options),
                "main_metric": self.main_metric, "higher_is_better": self.higher_is_better}


TASK_TYPES: dict[str, type[Task]] = {}


def register_task_type(cls: type[Task]) -> type[Task]:
    """Class decorator: make a :class:`Task` subclass available under ``cls.type_name``."""
    TASK_TYPES[cls.type_name] = cls
    return cls


def make_task(name: str, spec: TaskSpec, type_name: str | None = None,
              options: dict[str, Any] | None = None) -> Task:
    """Bind task ``name`` to its type (``type_name`` overrides the dataset's ``spec.type``)."""
    type_name = type_name or spec.type
    if type_name not in TASK_TYPES:
        raise unknown_choice("task type", type_name, TASK_TYPES)
    if type_name != spec.type:
        spec = TaskSpec(type_name, spec.num_classes, spec.ignore_index, spec.description)
    return TASK_TYPES[type_name](name, spec, options)

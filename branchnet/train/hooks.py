"""The training loop's extension point: hooks called at fixed points of :func:`~branchnet.train.engine.fit`.

A :class:`TrainingHook` sees a :class:`FitContext` (the model, the optimiser, the step and
epoch counters, the current learning rate ...) and may

* run extra forward/backward passes on the step's own batch in :meth:`~TrainingHook.before_step`
  (it must leave the gradients as it found them: ``None`` or zero), e.g. TAG's lookahead;
* change the model between steps in :meth:`~TrainingHook.after_step`, e.g. Maximum Roaming's
  mask updates every ``delta`` epochs;
* add entries to the epoch's history record in :meth:`~TrainingHook.on_epoch_end`.

Its :meth:`~TrainingHook.state_dict` goes into every per-epoch checkpoint and is given back
with :meth:`~TrainingHook.load_state_dict` on ``--resume`` (before
:meth:`~TrainingHook.on_fit_start`, and after the model's own state, so a hook finds what it
attached to the model restored), so a resumed run equals the uninterrupted one. Hooks run in
the order given, every step: ``before_step`` sees the model in training mode with the step's
learning rate already set (``ctx.lr``); ``after_step`` runs after the optimiser step. Like the
loop itself, a hook reads nothing back from the device inside a step (tests/test_engine_sync.py):
it keeps what it measures on the device, or decides on the host from host state.

The two methods built on it: :class:`branchnet.train.roaming.RoamingHook` (Maximum Roaming:
``on_fit_start`` attaches per-task channel masks to the shared nodes, ``after_step`` takes the
update steps that are due, its state is the update plan) and
:class:`branchnet.affinity.tag.TagHook` (TAG: ``before_step`` computes the lookahead affinity
on the step's batch with ``torch.autograd.grad``, leaving ``.grad`` untouched; its state is
the running sum of the Z matrices). Under torch.distributed every rank runs every hook at the same steps;
a hook whose state depends on the data synchronises it itself
(:func:`branchnet.distributed.all_reduce_mean`), and one that draws random numbers
uses its own seeded generator (identical on every rank), never the global one.

Hooks that a config switches on (Maximum Roaming's ``train.roaming``) are listed in
:data:`HOOKS`: name -> a function of the config that returns the hooks to run (none when the
config leaves it off); :func:`config_hooks` gathers them for a training. A measuring hook
that a step adds itself (TAG, :mod:`branchnet.steps.affinity`) is not listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from branchnet.registry import Registry


@dataclass
class FitContext:
    """What a hook may read (and the model/optimiser it may use) during :func:`fit`.

    Attributes:
        model: the network being trained (not the DDP wrapper).
        net: what the loop calls for the forward pass (the DDP wrapper under torchrun).
        tasks: the tasks trained.
        optimizer: the optimiser; ``lr`` is the learning rate of its first group now.
        device: where the model lives.
        epochs: epochs of the whole run; ``epoch`` (0-based) and ``step`` (optimiser steps
            done, over the whole run) are updated by the loop.
        steps_per_epoch: optimiser steps per epoch; ``total_steps = epochs * steps_per_epoch``.
        seed: the run's seed.
        precision: the autocast setting of the forward pass.
    """

    model: nn.Module
    net: nn.Module
    tasks: Sequence[Any]
    optimizer: torch.optim.Optimizer
    device: torch.device
    epochs: int
    steps_per_epoch: int
    seed: int
    precision: Any
    epoch: int = 0
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


class TrainingHook:
    """Base class of training hooks: every method is a no-op; override what you need.

    ``name`` keys the hook's state in the checkpoint (unique among a run's hooks).
    """

    name = "hook"

    def on_fit_start(self, ctx: FitContext) -> None:
        """Once, after the model, optimiser and (on resume) the hook's state are in place."""

    def before_step(self, ctx: FitContext, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        """Before the step's forward pass, with the step's batch on the device."""

    def after_step(self, ctx: FitContext) -> None:
        """After the optimiser step; ``ctx.step`` already counts it."""

    def on_epoch_end(self, ctx: FitContext, record: dict[str, Any]) -> None:
        """After epoch ``ctx.epoch`` (validation metrics in ``record`` when it was scored);
        entries added to ``record`` go into the history."""

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors/numbers/strings/lists/dicts only (checkpoints load with weights_only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


#: Training hooks a config switches on: name -> ``"module:function"`` of ``function(config) -> [hooks]``.
HOOKS: Registry[Callable[[Any], list[TrainingHook]]] = Registry("training hook", {
    "roaming": "branchnet.train.roaming:roaming_hooks",
})


def config_hooks(config: Any) -> list[TrainingHook]:
    """The hooks ``config`` switches on, in the order of :data:`HOOKS`."""
    return [hook for name in HOOKS for hook in HOOKS[name](config)]

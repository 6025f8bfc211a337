"""Maximum Roaming (Pascal et al., "Maximum Roaming Multi-Task Learning", AAAI 2021) as a training hook.

docs/design.md, "Maximum Roaming"; docs/training.md, "Maximum Roaming". In every convolution of
every encoder node shared by two or more tasks (a *layer* of S filters, masked where its output
channels are final: :mod:`branchnet.nn.masking`), task t uses the filters ``A_t(c)`` after update
step c and has used ``B_t(c)`` (the union of ``A_t(0..c)``).

* **Initialisation** (the paper's "Parameter Partitioning Initialization"): every
  ``m[i, t] ~ Bernoulli(p)``; a filter no task got is given to one task drawn uniformly, so
  every filter is used (the full-capacity constraint, Eq. 3: ``sum_t m[i, t] >= 1``). p = 1 is
  the plain network, p = 0 disjoint partitions.
* **Update step** c -> c + 1 (Definition 1), every ``delta`` epochs (``c = floor(E / delta)``,
  E the epochs trained, fractional): in every layer, every task t whose ``{1..S} \\ B_t(c)``
  is not empty gains one filter ``i_+`` drawn uniformly from it and releases one filter
  ``i_-`` of ``A_t(c)``: one filter per task and step.
* **Full capacity during updates.** The paper updates M "under constraint (3)" without saying
  how. Drawn independently, as Definition 1 reads, the releases leave a filter that all its
  users released in the same step to no task at all (simulated: in a 64-filter layer at
  p = 0.5 with two tasks, about 20% of the filters end the plan unused). Here the tasks move
  one after the other, in an order drawn uniformly per step and layer, each against the masks
  as they are: ``i_-`` is drawn uniformly from the filters of ``A_t(c)`` that t holds and
  another task uses too, so no release can leave a filter unused; a task holding no such
  filter (all its filters are its own, as at p = 0) instead *swaps* with a task u using
  ``i_+``: t takes ``i_+`` from u and gives u one of its own, drawn uniformly (u has then
  visited it). So each task's number of filters never changes (Lemma 1.3), every filter is
  always used, every task gains one new filter per step until it has visited all of them, so
  its plan ends after at most ``S - |A_t(0)|`` steps, exactly that many when it was never a
  swap partner (Lemma 1.1: ``(1 - p) S`` in expectation; in units of training, ``delta``
  epochs per step), and at completion every filter has been used by every task for at least
  ``delta`` epochs (Lemma 1.2). At p >= 0.5 swaps are rare (none in the tests' layers); at
  p = 0 every update is a swap and the partitions stay disjoint.
* **Completion** r in (0, 1]: a layer stops after ``round(r * L)`` update steps, L = its plan's
  length ``max_t (S - |A_t(0)|)`` (the paper's update ratio ``r(c) = c / ((1 - p) S)``, Eq. 6);
  r = 1 runs every layer to its end.

The draws come from their own generators, ``numpy.random.default_rng([seed, ROAMING_STREAM,
layer, step])``: nothing touches torch's random state (a run with p = 1 reproduces the plain
run exactly), every rank of a distributed run draws the same masks, and a resumed run the same
as the uninterrupted one. The plan's state (A, B, steps) is the hook's checkpointed state; the
masks themselves are buffers of the model (its ``channel_masks``), saved in ``model.pt``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch

from branchnet.schema import RoamingConfig
from branchnet.errors import BadInput
from branchnet.train.hooks import FitContext, TrainingHook

#: Second word of the roaming generators' seed (b"ROAM"): keeps them apart from other draws.
ROAMING_STREAM = 0x524F414D


@dataclass(frozen=True)
class Layer:
    """One roaming layer: point ``point`` of node ``key``, ``filters`` S, ``tasks`` T."""

    key: str
    point: int
    filters: int
    tasks: int


def initial_masks(filters: int, tasks: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """(S, T) bool: ``m[i, t] ~ Bernoulli(p)``, then each filter no task got to one uniformly drawn task."""
    masks = rng.random((filters, tasks)) < p
    for i in np.flatnonzero(~masks.any(axis=1)):
        masks[i, rng.integers(tasks)] = True
    return masks


def update_layer(used: np.ndarray, visited: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One update step of one layer (module docstring): ``A(c), B(c) -> A(c+1), B(c+1)``.

    Tasks move one after the other in an order drawn uniformly, each against the masks as
    they are: ``i_+`` uniform from ``{1..S} \\ B_t(c)``, ``i_-`` uniform from the filters of
    ``A_t(c)`` it holds that another task uses too; when it holds no such filter, it swaps with
    a task u that uses ``i_+``: t takes ``i_+`` from u and gives u a filter drawn uniformly from
    its own. Returns ``(used, visited, updated, swaps)``: the new (S, T) masks, which tasks
    exchanged a filter, and the number of swaps. Tasks that have visited every filter only
    take part as swap partners.
    """
    used = np.asarray(used, bool)
    new = used.copy()
    visited = np.asarray(visited, bool).copy()
    tasks = used.shape[1]
    updated = np.zeros(tasks, bool)
    swaps = 0
    for t in rng.permutation(tasks):
        free = np.flatnonzero(~visited[:, t])
        if free.size == 0:
            continue
        gain = int(rng.choice(free))
        shared = new.sum(axis=1) >= 2
        candidates = np.flatnonzero(used[:, t] & new[:, t] & shared)
        if candidates.size:
            new[int(rng.choice(candidates)), t] = False
        else:  # every filter t holds is its own: swap with a user of the gained one
            partner = int(rng.choice(np.flatnonzero(new[gain])))
            own = np.flatnonzero(used[:, t] & new[:, t] & ~new[:, partner])
            give = int(rng.choice(own if own.size else np.flatnonzero(new[:, t] & ~new[:, partner])))
            new[give, t], new[give, partner], new[gain, partner] = False, True, False
            visited[give, partner] = True
            swaps += 1
        new[gain, t] = True
        visited[gain, t] = True
        updated[t] = True
    return new, visited, updated, swaps


class RoamingPlan:
    """The update plan of every roaming layer (module docstring).

    Attributes:
        used / visited: per layer, the (S, T) bool ``A_t(c)`` and ``B_t(c)``.
        steps: update steps taken by the schedule (c).
        layer_steps: per layer, update steps in which it changed (it stops at its completion).
        length: per layer, ``L = max_t (S - |A_t(0)|)``.
        swaps: per layer, updates made as a swap (to keep every filter used).
    """

    def __init__(self, layers: Sequence[Layer], p: float, completion: float = 1.0, seed: int = 0) -> None:
        self.layers = list(layers)
        self.p = float(p)
        self.completion = float(completion)
        self.seed = int(seed)
        self.used = [initial_masks(layer.filters, layer.tasks, p, self._rng(i, 0))
                     for i, layer in enumerate(self.layers)]
        self.visited = [m.copy() for m in self.used]
        self.length = [int((layer.filters - m.sum(axis=0)).max()) if m.size else 0
                       for layer, m in zip(self.layers, self.used)]
        self.steps = 0
        self.layer_steps = [0] * len(self.layers)
        self.swaps = [0] * len(self.layers)

    def _rng(self, layer: int, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, ROAMING_STREAM, layer, step])

    def layer_done(self, i: int) -> bool:
        """Whether layer i takes no more update steps (every task visited every filter, or r reached)."""
        if self.visited[i].all():
            return True
        return self.completion < 1.0 and self.layer_steps[i] >= round(self.completion * self.length[i])

    @property
    def finished(self) -> bool:
        return all(self.layer_done(i) for i in range(len(self.layers)))

    def step(self) -> list[int]:
        """Update step c -> c + 1 of every layer not done; returns the layers that changed."""
        self.steps += 1
        changed = []
        for i in range(len(self.layers)):
            if self.layer_done(i):
                continue
            self.used[i], self.visited[i], updated, swaps = update_layer(
                self.used[i], self.visited[i], self._rng(i, self.steps))
            self.layer_steps[i] += 1
            self.swaps[i] += swaps
            if updated.any():
                changed.append(i)
        return changed

    def summary(self) -> dict[str, Any]:
        """Plain numbers for the history: steps taken, layers done, ideal plan length, swaps."""
        return {"steps": self.steps, "layers_done": sum(self.layer_done(i) for i in range(len(self.layers))),
                "layers": len(self.layers), "plan_steps": max(self.length, default=0),
                "swaps": int(sum(self.swaps))}

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "completion": self.completion, "seed": self.seed, "steps": self.steps,
                "layers": [[layer.key, layer.point, layer.filters, layer.tasks] for layer in self.layers],
                "used": [torch.from_numpy(m.astype(np.uint8)) for m in self.used],
                "visited": [torch.from_numpy(m.astype(np.uint8)) for m in self.visited],
                "layer_steps": list(self.layer_steps), "length": list(self.length),
                "swaps": list(self.swaps)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "RoamingPlan":
        plan = cls.__new__(cls)
        plan.layers = [Layer(str(k), int(pt), int(s), int(t)) for k, pt, s, t in state["layers"]]
        plan.p, plan.completion, plan.seed = float(state["p"]), float(state["completion"]), int(state["seed"])
        plan.steps = int(state["steps"])
        plan.used = [m.numpy().astype(bool) for m in state["used"]]
        plan.visited = [m.numpy().astype(bool) for m in state["visited"]]
        plan.layer_steps = [int(v) for v in state["layer_steps"]]
        plan.length = [int(v) for v in state["length"]]
        plan.swaps = [int(v) for v in state["swaps"]]
        return plan


def plan_digest(plan: RoamingPlan) -> int:
    """A 62-bit digest of the plan's masks and step count (equal plans, equal digests)."""
    import hashlib

    digest = hashlib.sha256(str(plan.steps).encode())
    for used, visited in zip(plan.used, plan.visited):
        digest.update(np.packbits(used).tobytes())
        digest.update(np.packbits(visited).tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 2


def check_same_on_every_rank(plan: RoamingPlan) -> None:
    """Under torch.distributed: every rank must hold the same plan (the generators are seeded
    alike, so a difference is a bug, never the data); a RuntimeError otherwise. Called at
    epoch ends (it reads the reduced digest back)."""
    from branchnet import distributed as dist_utils

    if not dist_utils.is_distributed():
        return
    mine = torch.tensor([plan_digest(plan)], dtype=torch.int64)
    low, high = dist_utils.all_reduce_min(mine.clone()), -dist_utils.all_reduce_min(-mine)
    if int(low) != int(high):
        raise RuntimeError("Maximum Roaming's masks differ between ranks; they are drawn from generators seeded "
                           "alike on every rank, so this is a bug in branchnet")


def roaming_layers(model: Any) -> list[Layer]:
    """The roaming layers of a :class:`BranchedNet` whose channel masks are attached."""
    masks = model.channel_masks
    return [Layer(key, k, int(node.mask(k).shape[0]), int(node.mask(k).shape[1]))
            for key, node in masks.nodes.items() for k in range(node.num_points)]


def update_period(delta: float, steps_per_epoch: int) -> Fraction:
    """Optimiser steps between two update steps: ``delta * steps_per_epoch`` as an exact fraction."""
    return Fraction(str(delta)) * steps_per_epoch


class RoamingHook(TrainingHook):
    """Maximum Roaming during :func:`~branchnet.train.engine.fit` (module docstring).

    ``on_fit_start`` attaches the channel masks to every shared node (or finds them restored
    from the checkpoint) and draws the initial partition; ``after_step`` takes the update
    steps that are due (``c = floor(step / (delta * steps_per_epoch))``), on the host, and
    writes the changed masks into the model's buffers. Nothing is read back from the device.
    """

    name = "roaming"

    def __init__(self, settings: RoamingConfig, seed: int) -> None:
        self.settings = settings
        self.seed = int(seed)
        self.plan: RoamingPlan | None = None
        self._loaded: dict[str, Any] | None = None
        self.period = Fraction(1)

    def on_fit_start(self, ctx: FitContext) -> None:
        model = ctx.model
        masks = model.channel_masks if model.channel_masks is not None else model.enable_channel_masks()
        layers = roaming_layers(model)
        if self._loaded is not None:
            self.plan = RoamingPlan.from_state(self._loaded)
            if self.plan.layers != layers:
                raise BadInput("the checkpoint's roaming plan is for other layers than this network's; "
                               "drop --resume to start over")
        else:
            self.plan = RoamingPlan(layers, self.settings.p, self.settings.completion, self.seed)
        self.period = update_period(self.settings.delta, ctx.steps_per_epoch)
        self._write(masks, range(len(layers)))

    def _write(self, masks: Any, changed: Sequence[int]) -> None:
        for i in changed:
            layer = self.plan.layers[i]
            masks.set_masks(layer.key, layer.point, self.plan.used[i])
        masks.refresh()

    def after_step(self, ctx: FitContext) -> None:
        due = math.floor(Fraction(ctx.step) / self.period)
        changed: set[int] = set()
        while self.plan.steps < due and not self.plan.finished:
            changed.update(self.plan.step())
        if changed:
            self._write(ctx.model.channel_masks, sorted(changed))

    def on_epoch_end(self, ctx: FitContext, record: dict[str, Any]) -> None:
        check_same_on_every_rank(self.plan)
        record["roaming"] = {**self.plan.summary(), "forward_passes": ctx.model.channel_masks.forward_passes()}

    def state_dict(self) -> dict[str, Any]:
        return self.plan.state_dict() if self.plan is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = state or None


def has_shared_node(partitions: Sequence[Sequence[Sequence[str]]]) -> bool:
    """Whether a tree has an encoder node shared by two or more tasks (where roaming applies)."""
    return any(len(group) >= 2 for partition in partitions for group in partition)


def roaming_config(config: Any, partitions: Sequence[Sequence[Sequence[str]]], *, allow_plain: bool = False,
                   label: str = "the network", quiet: bool = False) -> Any:
    """``config`` as the network of ``partitions`` is trained with it.

    ``train.roaming`` on a tree without a node shared by two or more tasks is a
    :class:`BadInput` (nothing to roam over), unless ``allow_plain`` (``--allow-plain``): then the
    network trains plainly, a status line says so, and the config returned has no
    ``train.roaming`` (so the network's fingerprint is the plain one's).
    """
    import dataclasses

    from branchnet.progress import say

    if config.train.roaming is None or has_shared_node(partitions):
        return config
    if not allow_plain:
        raise BadInput(f"train.roaming needs an encoder node shared by two or more tasks, but {label} shares none; "
                       "drop train.roaming (--set train.roaming=null) or pass --allow-plain to train it plainly")
    if not quiet:
        say(f"{label}: no encoder node is shared by two or more tasks; trained plainly (train.roaming ignored)")
    return dataclasses.replace(config, train=dataclasses.replace(config.train, roaming=None))


def roaming_hooks(config: Any) -> list[TrainingHook]:
    """``[RoamingHook]`` when ``config.train.roaming`` is set (see :func:`roaming_config`), else ``[]``."""
    settings = config.train.roaming
    return [] if settings is None else [RoamingHook(settings, config.seed)]


def roaming_metrics(config: Any, model: Any) -> dict[str, Any] | None:
    """The ``roaming`` entry of a network's metrics.json: the settings, and the node executions
    of one forward pass with the final masks against the plain network's (one per node)."""
    import dataclasses

    if config.train.roaming is None or model.channel_masks is None:
        return None
    masks = model.channel_masks
    return {**dataclasses.asdict(config.train.roaming), "node_passes": masks.forward_passes(),
            "node_passes_plain": sum(len(p) for p in model.partitions), "streams": masks.streams()}

"""What each candidate network of ``branchnet groupings`` costs: per-image FLOPs relative to the
mean full-width single-task network (Standley et al.'s unit, "one standard network").

A group's network is the all-shared tree of the group, whose FLOPs are the stages' plus
its heads' (a head sees the same features whatever the group), so one network per width
prices every group.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from branchnet.config import Config
from branchnet.errors import BadInput


def scaled_config(config: Config, width: float) -> Config:
    """``config`` with the encoder ``width`` times as wide (``model.width * width``)."""
    if width == 1.0:
        return config
    model = dataclasses.replace(config.model, width=config.model.width * width)
    return dataclasses.replace(config, model=model)


@dataclass(frozen=True)
class WidthCosts:
    """Per-image FLOPs and params of the parts of the networks at one width.

    ``stage_flops``/``stage_params``: one copy of each encoder stage (D,);
    ``head_flops``/``head_params``: ``{task: value}``.
    """

    width: float
    stage_flops: tuple[int, ...]
    stage_params: tuple[int, ...]
    head_flops: dict[str, int]
    head_params: dict[str, int]

    def flops(self, tasks: Sequence[str]) -> int:
        """Per-image FLOPs of the network of ``tasks``: the encoder once, one head per task."""
        return int(sum(self.stage_flops) + sum(self.head_flops[t] for t in tasks))

    def params(self, tasks: Sequence[str]) -> int:
        return int(sum(self.stage_params) + sum(self.head_params[t] for t in tasks))


@dataclass(frozen=True)
class CostModel:
    """Costs of every group network at every width, and the reference they are relative to."""

    tasks: tuple[str, ...]
    widths: dict[float, WidthCosts]

    @property
    def reference_flops(self) -> float:
        """Mean per-image FLOPs of the full-width single-task networks of ``tasks``."""
        full = self.widths[1.0]
        return math.fsum(full.flops([t]) for t in self.tasks) / len(self.tasks)

    def flops(self, tasks: Sequence[str], width: float = 1.0) -> int:
        return self.widths[width].flops(tasks)

    def params(self, tasks: Sequence[str], width: float = 1.0) -> int:
        return self.widths[width].params(tasks)

    def cost(self, tasks: Sequence[str], width: float = 1.0) -> float:
        """``flops(tasks, width) / reference_flops`` (1 = one standard network)."""
        return self.flops(tasks, width) / self.reference_flops


def cost_model(config: Config, tasks: Sequence[Any], widths: Sequence[float]) -> CostModel:
    """Measure stage and head costs at each width from one all-shared network of ``tasks``.

    A group's network is the all-shared tree of the group, whose FLOPs are the stages'
    plus its heads' (a head sees the same features whatever the group), so one model per
    width prices every group. Raises BadInput when the backbone cannot take a width
    (HRNet has no width multiplier), naming the width.
    """
    from branchnet.nn.backbones import NUM_STAGES
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import shared_partitions

    names = [t.name for t in tasks]
    out: dict[float, WidthCosts] = {}
    for width in widths:
        cfg = scaled_config(config, width)
        try:
            model = BranchedNet(list(tasks), shared_partitions(names, NUM_STAGES), cfg.model, cfg.image_size)
        except BadInput as exc:
            if width == 1.0:
                raise
            raise BadInput(f"--widths {width:g} (model.width {cfg.model.width:g}): {exc}") from None
        costs = model.costs()
        out[float(width)] = WidthCosts(float(width), tuple(costs["stage_flops"]), tuple(costs["stage_params"]),
                                       dict(costs["head_flops"]), dict(costs["head_params"]))
    return CostModel(tuple(names), out)

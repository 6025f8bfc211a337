"""Branched multi-task networks built from a tree of task groups.

A tree is a list of partitions ``P_0 .. P_{D-1}`` of the tasks (docs/design.md, "Tree"):
``P_d`` says which tasks share stage d, and every ``P_d`` refines ``P_{d-1}``. The
:class:`BranchedNet` holds one copy of stage d per group of ``P_d`` and one head per
task at the leaves; a forward pass runs every node once per batch and feeds its output
to all its children, so shared stages are computed once.

A single-task model is the one-task tree; the usual multi-task baseline is the
all-shared tree and independent single-task networks are the all-separate tree.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import torch
from torch import nn

from branchnet.nn.backbones import StageLayout, build_stages, clone_stage, count_flops, count_params
from branchnet.schema import ModelConfig
from branchnet.errors import BadInput
from branchnet.nn.heads import build_head
from branchnet.tasks import Task
from branchnet.tree import Partitions, check_partitions


def parent_indices(partitions: Partitions) -> list[list[int]]:
    """``parents[d][j]``: index of the group of ``P_{d-1}`` that contains group j of ``P_d``.

    Level 0 groups have parent -1 (the input). ``partitions`` must already be checked
    (:func:`branchnet.tree.check_partitions`).
    """
    parents: list[list[int]] = [[-1] * len(partitions[0])]
    for d in range(1, len(partitions)):
        owner = {t: j for j, group in enumerate(partitions[d - 1]) for t in group}
        parents.append([owner[group[0]] for group in partitions[d]])
    return parents


class BranchedNet(nn.Module):
    """A tree of encoder stages with task heads at its leaves.

    Args:
        tasks: the tasks (their order fixes the output order and canonical partitions).
        partitions: D partitions of the task names, each refining the previous one.
        model: encoder and head settings.
        image_size: input (H, W), used to describe branch points and count FLOPs.

    ``forward(x)`` takes images (B, 3, H, W) and returns ``{task: prediction}``.
    """

    def __init__(self, tasks: Sequence[Task], partitions: Partitions, model: ModelConfig,
                 image_size: tuple[int, int]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.task_names = [t.name for t in tasks]
        for name in self.task_names:
            if "." in name or not name:
                raise BadInput(f"task name '{name}' must be non-empty and contain no '.'")
        template, layout = build_stages(model, image_size)
        if len(partitions) != layout.num_stages:
            raise BadInput(f"the tree has {len(partitions)} levels but {model.backbone} has "
                           f"{layout.num_stages} stages ({', '.join(layout.locations)})")
        self.partitions = check_partitions([[list(g) for g in p] for p in partitions], self.task_names)
        self.parents = parent_indices(self.partitions)
        self.layout: StageLayout = layout
        self.model_config = model
        self.image_size = tuple(image_size)
        nodes = {}
        for d, partition in enumerate(self.partitions):
            for j in range(len(partition)):
                # the first group reuses the template stage; the others get their own copy
                nodes[self.node_key(d, j)] = template[d] if j == 0 else clone_stage(template[d])
        self.nodes = nn.ModuleDict(nodes)
        last = layout.num_stages - 1
        self.leaf = {t: j for j, group in enumerate(self.partitions[last]) for t in group}
        # Each head is drawn from its own stream, seeded by one draw after the encoder and the
        # task's name: a task's head starts the same whichever tasks share the network, so the
        # all-separate tree starts (and, trained alike, ends) as the single-task models.
        _check_heads_fit(self.tasks, list(layout.channels[last]), model)
        base = int(torch.randint(0, 2**31 - 1, (), device="cpu").item())  # "cpu": also when built on "meta"
        heads = {}
        for t in self.tasks:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(base + zlib.crc32(t.name.encode()))
                heads[t.name] = build_head(t, list(layout.channels[last]), model)
        self.heads = nn.ModuleDict(heads)
        # per-task channel masks of shared nodes (Maximum Roaming, branchnet.nn.masking); None: plain
        self.register_module("channel_masks", None)

    @staticmethod
    def node_key(depth: int, group: int) -> str:
        return f"s{depth}_g{group}"

    @property
    def num_stages(self) -> int:
        return len(self.partitions)

    def forward_levels(self, x: torch.Tensor, depth: int | None = None) -> list[list[Any]]:
        """Outputs of every node: ``levels[d][j]`` for group j of ``P_d`` (up to ``depth``)."""
        levels: list[list[Any]] = []
        last = self.num_stages if depth is None else depth + 1
        for d in range(last):
            outputs = []
            for j, parent in enumerate(self.parents[d]):
                inputs = x if parent < 0 else levels[d - 1][parent]
                outputs.append(self.nodes[self.node_key(d, j)](inputs))
            levels.append(outputs)
        return levels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        masks = self.channel_masks
        if masks is not None and masks.active:
            return masks.run(self, x)
        levels = self.forward_levels(x)
        size = tuple(x.shape[-2:])
        return {t: self.heads[t](levels[-1][self.leaf[t]], size) for t in self.task_names}

    def enable_channel_masks(self, keys: Sequence[str] | None = None):
        """Attach per-task channel masks (all ones) to the nodes ``keys`` (default: every node
        shared by two or more tasks) and return them (:class:`branchnet.nn.masking.ChannelMasks`).
        ``forward`` then runs each task with its masks; ``forward_levels`` stays the plain network."""
        from branchnet.nn.masking import ChannelMasks

        if self.channel_masks is not None:
            raise ValueError("channel masks are already attached")
        device = next(self.parameters()).device
        self.channel_masks = ChannelMasks(self, keys).to(device)
        return self.channel_masks

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; a state with channel masks (``channel_masks.*``, from a
        network trained with Maximum Roaming) attaches them first."""
        prefix = "channel_masks.nodes."
        keys = sorted({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)},
                      key=lambda key: tuple(int(v) for v in key[1:].split("_g")))
        if keys and self.channel_masks is None:
            self.enable_channel_masks(keys)
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.channel_masks is not None:
            self.channel_masks.sync_from_buffers()
        return result

    def task_features(self, x: torch.Tensor, task: str) -> list[Any]:
        """The features task ``task`` sees at each branch point (D entries, shallow to deep)."""
        levels = self.forward_levels(x)
        out = []
        for d, partition in enumerate(self.partitions):
            j = next(k for k, group in enumerate(partition) if task in group)
            out.append(levels[d][j])
        return out

    def last_shared_weight(self) -> nn.Parameter | None:
        """GradNorm's W: the last weight (ndim >= 2) of the deepest node that every task shares,
        or None when the tasks split at the first stage."""
        shared = 0
        while shared < self.num_stages and len(self.partitions[shared]) == 1:
            shared += 1
        if shared == 0:
            return None
        weights = [p for p in self.nodes[self.node_key(shared - 1, 0)].parameters() if p.ndim >= 2]
        return weights[-1] if weights else None

    # ------------------------------------------------------------------ costs

    def stage_params(self) -> list[int]:
        """Parameters of one copy of each stage."""
        return [count_params(self.nodes[self.node_key(d, 0)]) for d in range(self.num_stages)]

    def head_params(self) -> dict[str, int]:
        return {t: count_params(self.heads[t]) for t in self.task_names}

    @torch.no_grad()
    def costs(self) -> dict[str, Any]:
        """Parameters and per-image FLOPs: per stage copy, per head, and in total."""
        device = next(self.parameters()).device
        x = torch.zeros(1, 3, *self.image_size, device=device)
        stage_flops, stage_params = [], []
        was_training = self.training
        self.eval()
        for d in range(self.num_stages):
            stage = self.nodes[self.node_key(d, 0)]
            stage_params.append(count_params(stage))
            stage_flops.append(count_flops(stage, x))
            x = stage(x)
        head_params = {t: count_params(self.heads[t]) for t in self.task_names}
        head_flops = {t: count_flops(self.heads[t], x, self.image_size) for t in self.task_names}
        self.train(was_training)
        groups = [len(p) for p in self.partitions]
        return {
            "params": count_params(self),
            "flops": int(sum(g * f for g, f in zip(groups, stage_flops)) + sum(head_flops.values())),
            "stage_params": stage_params, "stage_flops": stage_flops,
            "head_params": head_params, "head_flops": head_flops,
        }

    def describe(self) -> dict[str, Any]:
        """Plain description stored in checkpoints (no pickled objects)."""
        return {"tasks": [t.describe() for t in self.tasks], "partitions": self.partitions,
                "layout": self.layout.to_dict(), "image_size": list(self.image_size)}

    # ------------------------------------------------------------------ initialisation

    def init_from_single(self, single_states: dict[str, dict[str, torch.Tensor]], mode: str = "first") -> None:
        """Copy weights of trained single-task models into the nodes and heads.

        ``single_states[t]`` is the state dict of task t's single-task model (itself a
        one-task :class:`BranchedNet`). Each node takes stage d from the group's first
        task (``mode="first"``) or the element-wise mean over the group (``"average"``;
        BN running statistics averaged too, the batch counter from the first task);
        heads come from their own task's model.
        """
        missing = [t for t in self.task_names if t not in single_states]
        if missing:
            raise BadInput(f"no single-task weights for {', '.join(missing)}; run `branchnet train-single`")
        state = {}
        for d, partition in enumerate(self.partitions):
            for j, group in enumerate(partition):
                prefix = f"nodes.{self.node_key(d, 0)}."
                sources = group if mode == "average" else group[:1]
                own = self.nodes[self.node_key(d, j)].state_dict()
                for key in own:
                    try:
                        values = [single_states[t][prefix + key] for t in sources]
                    except KeyError:
                        raise BadInput(f"single-task weights of {', '.join(sources)} do not fit this "
                                       f"{self.layout.backbone} encoder (no '{prefix + key}'); retrain them "
                                       "with `branchnet train-single --force`") from None
                    if values[0].is_floating_point() and len(values) > 1:
                        value = torch.stack([v.float() for v in values]).mean(0).to(values[0].dtype)
                    else:
                        value = values[0]
                    state[f"nodes.{self.node_key(d, j)}.{key}"] = value
        for t in self.task_names:
            for key, value in single_states[t].items():
                if key.startswith(f"heads.{t}."):
                    state[key] = value
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise BadInput(f"single-task weights do not fit this network ({first[:160]}); retrain them "
                           "with `branchnet train-single --force`") from None



def _check_heads_fit(tasks: Sequence[Any], channels: list[int], model: ModelConfig) -> None:
    """Refuse heads whose weights cannot fit in the free memory (a huge ``model.head_channels``)
    before they are allocated: they are built on the meta device first (shapes only; torch's
    random state is left as it was, so the real heads start the same)."""
    from branchnet.machine import check_memory
    from branchnet.nn.memory import parameter_bytes

    if torch.get_default_device().type == "meta":
        return
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        need = sum(parameter_bytes(build_head(t, channels, model)) for t in tasks)
    check_memory(need, f"the task heads ({need // 4:,} parameters at model.head_channels {model.head_channels})",
                 "lower model.head_channels (e.g. 64)")

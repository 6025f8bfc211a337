"""Per-task masks over the output channels of the convolutions in some nodes of a :class:`BranchedNet`.

The mechanism behind Maximum Roaming (docs/training.md, "Maximum Roaming"; the plan that draws
and changes the masks is :mod:`branchnet.train.roaming`). Pascal et al.'s Eq. 2 computes task
t's output of a layer as ``sigma((H_t * K) ⊙ m_t)``: every task runs its own forward pass
through the masked layers, with its own mask ``m_t`` over the layer's S output channels.

**Mask points.** Each convolution of a masked node is masked where its output channels are
final: at the BatchNorm that follows it (the authors' code puts the mask after the
normalisation, so a channel a task does not use is exactly zero), or at the convolution
itself when no normalisation follows it (:func:`mask_points`). Each point holds a buffer
``m<k>`` (S, T) over its S channels for the node's T tasks (1 = used); a BatchNorm point also
keeps every task's running statistics (``mean<k>``, ``var<k>``, (T, S)), because the tasks'
inputs differ once their masks do, and a task is evaluated with the statistics of its own
forward passes.

**Streams.** Tasks whose inputs are the same and whose masks are identical in a node share
one forward pass through it; a *stream* is such a set of tasks at one node. With every mask
all ones the whole network is one stream per node and :class:`BranchedNet` runs its plain
forward (:attr:`ChannelMasks.active` is False): the same computation, BatchNorm statistics
included, at no extra cost. The streams are planned on the host from host copies of the
masks whenever the masks change (:meth:`ChannelMasks.set_masks` + :meth:`ChannelMasks.refresh`),
so a forward pass never reads a device value back.

The masks, the per-task statistics and nothing else are buffers of the ``channel_masks``
submodule, so they are in the model's ``state_dict`` (checkpoints and ``model.pt``);
:meth:`BranchedNet.load_state_dict` re-creates the mechanism from such keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def mask_points(node: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """``(name, module, channels)`` of every place where a convolution of ``node`` is masked.

    Modules are visited in registration order (timm's ResNet and HRNet blocks register each
    convolution right before its BatchNorm): a ``Conv2d`` followed by a BatchNorm over as many
    channels is masked at the BatchNorm's output, any other ``Conv2d`` at its own output.
    """
    points: list[tuple[str, nn.Module, int]] = []
    pending: tuple[str, nn.Conv2d] | None = None
    for name, module in node.named_modules():
        if isinstance(module, nn.Conv2d):
            if pending is not None:
                points.append((pending[0], pending[1], pending[1].out_channels))
            pending = (name, module)
        elif isinstance(module, _BatchNorm) and pending is not None:
            if module.num_features == pending[1].out_channels:
                points.append((name, module, module.num_features))
            else:
                points.append((pending[0], pending[1], pending[1].out_channels))
            pending = None
    if pending is not None:
        points.append((pending[0], pending[1], pending[1].out_channels))
    return points


class NodeMasks(nn.Module):
    """The masks of one node: ``m<k>`` (S_k, T) per mask point k, per-task BN statistics."""

    def __init__(self, key: str, tasks: Sequence[str], points: list[tuple[str, nn.Module, int]]) -> None:
        super().__init__()
        self.key = key
        self.tasks = list(tasks)
        self.point_names = [name for name, _, _ in points]
        self.is_bn = [isinstance(module, _BatchNorm) and module.track_running_stats for _, module, _ in points]
        for k, (_, module, channels) in enumerate(points):
            self.register_buffer(f"m{k}", torch.ones(channels, len(self.tasks)))
            if self.is_bn[k]:
                self.register_buffer(f"mean{k}", module.running_mean.detach().clone().unsqueeze(0)
                                     .repeat(len(self.tasks), 1))
                self.register_buffer(f"var{k}", module.running_var.detach().clone().unsqueeze(0)
                                     .repeat(len(self.tasks), 1))

    @property
    def num_points(self) -> int:
        return len(self.point_names)

    def mask(self, k: int) -> torch.Tensor:
        return getattr(self, f"m{k}")


@dataclass
class Stream:
    """Tasks that share one forward pass through node ``key`` (``cols``: their columns in the
    node's masks, ``None`` for an unmasked node); ``views[k]`` is the mask of point k shaped
    (1, S, 1, 1), or None where it is all ones."""

    key: str
    tasks: list[str]
    cols: list[int] | None = None
    views: list[torch.Tensor | None] = field(default_factory=list)
    index: torch.Tensor | None = None


class ChannelMasks(nn.Module):
    """Per-task channel masks on the nodes ``keys`` of a :class:`BranchedNet` (see module docstring).

    Args:
        net: the network (its partitions, node modules and tasks; no reference to it is kept).
        keys: node keys (``"s<d>_g<j>"``) to mask; default every node shared by two or more tasks.
    """

    def __init__(self, net: Any, keys: Sequence[str] | None = None) -> None:
        super().__init__()
        self.task_names = list(net.task_names)
        self.partitions = [[list(g) for g in p] for p in net.partitions]
        self.parents = [list(p) for p in net.parents]
        if keys is None:
            keys = shared_node_keys(net)
        self.keys = list(keys)
        groups = {net.node_key(d, j): group for d, p in enumerate(self.partitions) for j, group in enumerate(p)}
        nodes = {}
        self._handles = []
        self._modules_of: dict[str, list[nn.Module]] = {}
        for key in self.keys:
            points = mask_points(net.nodes[key])
            nodes[key] = NodeMasks(key, groups[key], points)
            self._modules_of[key] = [module for _, module, _ in points]
            for k, (_, module, _) in enumerate(points):
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(key, k)))
                self._handles.append(module.register_forward_hook(self._post_hook(key, k)))
        self.nodes = nn.ModuleDict(nodes)
        self.host: dict[str, list[np.ndarray]] = {key: [np.ones(tuple(n.mask(k).shape), bool)
                                                        for k in range(n.num_points)]
                                                  for key, n in self.nodes.items()}
        self._plan: list[list[Stream]] = []
        self._current: Stream | None = None
        self.active = False
        self.refresh()

    # ------------------------------------------------------------------ masks

    def set_masks(self, key: str, k: int, mask: np.ndarray) -> None:
        """Task masks (S, T) bool of point k of node ``key`` (call :meth:`refresh` afterwards)."""
        node = self.nodes[key]
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(node.mask(k).shape):
            raise ValueError(f"mask of {key} point {k} must have shape {tuple(node.mask(k).shape)}, got {mask.shape}")
        self.host[key][k] = mask.copy()
        node.mask(k).copy_(torch.from_numpy(mask.astype(np.float32)))

    def sync_from_buffers(self) -> None:
        """Host copies from the buffers (after a ``load_state_dict``; reads the device once)."""
        for key, node in self.nodes.items():
            self.host[key] = [node.mask(k).detach().cpu().numpy() > 0.5 for k in range(node.num_points)]
        self.refresh(broadcast=False)

    def refresh(self, broadcast: bool = True) -> None:
        """Plan the streams from the host masks; :attr:`active` is False when every mask is all ones.

        When the masks stop being all ones, every task's BatchNorm statistics start from the
        module's own (the plain forward passes kept only those), unless ``broadcast`` is False
        (the per-task statistics were just loaded).
        """
        was_active = self.active
        self.active = any(not m.all() for masks in self.host.values() for m in masks)
        if self.active and not was_active and broadcast:
            self._broadcast_statistics()
        plan: list[list[Stream]] = []
        stream_of: dict[str, int] = {t: -1 for t in self.task_names}  # stream id per task at the previous level
        for d, partition in enumerate(self.partitions):
            level: list[Stream] = []
            ids: dict[str, int] = {}
            for j, group in enumerate(partition):
                key = f"s{d}_g{j}"
                node = self.nodes[key] if key in self.nodes else None
                by_key: dict[tuple, int] = {}
                for t in group:
                    if node is None:
                        signature: tuple = (stream_of[t],)
                    else:
                        col = node.tasks.index(t)
                        signature = (stream_of[t],) + tuple(m[:, col].tobytes() for m in self.host[key])
                    if signature not in by_key:
                        by_key[signature] = len(level)
                        level.append(Stream(key, [], [] if node is not None else None))
                    stream = level[by_key[signature]]
                    stream.tasks.append(t)
                    if node is not None:
                        stream.cols.append(node.tasks.index(t))
                    ids[t] = by_key[signature]
            for stream in level:
                if stream.cols is not None:
                    node = self.nodes[stream.key]
                    rep = stream.cols[0]
                    stream.views = [None if self.host[stream.key][k][:, rep].all()
                                    else node.mask(k)[:, rep].reshape(1, -1, 1, 1)
                                    for k in range(node.num_points)]
                    stream.index = torch.tensor(stream.cols, device=node.mask(0).device) if node.num_points else None
            plan.append(level)
            stream_of = ids
        self._plan = plan

    def streams(self) -> list[list[tuple[str, list[str]]]]:
        """``[(node key, tasks)]`` per level: which tasks share each forward pass."""
        return [[(s.key, list(s.tasks)) for s in level] for level in self._plan]

    def forward_passes(self) -> int:
        """Node executions per forward pass of the network (the plain network: one per node)."""
        return sum(len(level) for level in self._plan) if self.active else \
            sum(len(p) for p in self.partitions)

    def _broadcast_statistics(self) -> None:
        """Every task's BN statistics from the module's own (when the masks stop being trivial)."""
        for key, node in self.nodes.items():
            for k in range(node.num_points):
                if node.is_bn[k]:
                    module = self._module(key, k)
                    getattr(node, f"mean{k}").copy_(module.running_mean.unsqueeze(0).expand_as(getattr(node, f"mean{k}")))
                    getattr(node, f"var{k}").copy_(module.running_var.unsqueeze(0).expand_as(getattr(node, f"var{k}")))

    # ------------------------------------------------------------------ execution

    def run(self, net: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{task: prediction}`` of ``net`` with each task's masks (one forward pass per stream)."""
        size = tuple(x.shape[-2:])
        feats: dict[str, Any] = {t: x for t in self.task_names}
        try:
            for level in self._plan:
                for stream in level:
                    self._current = stream
                    out = net.nodes[stream.key](feats[stream.tasks[0]])
                    for t in stream.tasks:
                        feats[t] = out
        finally:
            self._current = None
        return {t: net.heads[t](feats[t], size) for t in self.task_names}

    def _module(self, key: str, k: int) -> nn.Module:
        return self._modules_of[key][k]

    def _pre_hook(self, key: str, k: int):
        def hook(module: nn.Module, args: Any) -> None:
            stream = self._current
            if stream is None or stream.key != key:
                return None
            node = self.nodes[key]
            if node.is_bn[k]:
                # fresh tensors, not copies into the module's: autograd keeps the statistics a
                # BatchNorm was called with, and the next stream must not change them in place
                rep = stream.cols[0]
                module.running_mean = getattr(node, f"mean{k}")[rep].clone()
                module.running_var = getattr(node, f"var{k}")[rep].clone()
            return None
        return hook

    def _post_hook(self, key: str, k: int):
        def hook(module: nn.Module, args: Any, out: torch.Tensor):
            stream = self._current
            if stream is None or stream.key != key:
                return None
            node = self.nodes[key]
            if node.is_bn[k] and module.training:
                index = stream.index
                mean, var = getattr(node, f"mean{k}"), getattr(node, f"var{k}")
                mean.index_copy_(0, index, module.running_mean.unsqueeze(0).expand(len(stream.cols), -1))
                var.index_copy_(0, index, module.running_var.unsqueeze(0).expand(len(stream.cols), -1))
            view = stream.views[k]
            if view is None:
                return None
            return out * view.to(out.dtype)
        return hook

    def remove(self) -> None:
        """Detach the hooks (the network runs plainly again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def shared_node_keys(net: Any) -> list[str]:
    """Keys of the encoder nodes of ``net`` shared by two or more tasks (shallow to deep)."""
    return [net.node_key(d, j) for d, partition in enumerate(net.partitions)
            for j, group in enumerate(partition) if len(group) >= 2]

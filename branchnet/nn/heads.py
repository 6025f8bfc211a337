"""Task heads (decoders) on top of the last encoder stage.

Dense tasks take the decoder ``model.head`` (or ``model.heads[task]``); every dense head
first fuses the last stage's output into one map (HRNet: every resolution upsampled to
the highest and concatenated, as in the survey's HRNet baseline; ResNet: the single
map) and ends upsampling its prediction bilinearly to the input size:

* ``simple`` (:class:`DenseHead`): a 3x3 conv-BN-ReLU of ``head_channels`` and a 1x1
  prediction conv.
* ``aspp`` (:class:`ASPPHead`): DeepLab-v3's atrous spatial pyramid pooling, the
  survey's ResNet-50 baseline head (Section 4.2.1; Appendix B.1): a 1x1 branch, one
  3x3 branch per rate in ``aspp_rates`` (12, 24, 36 at output stride 8) and an
  image-pooling branch, each conv-BN-ReLU of ``head_channels``; a 1x1 projection
  (BN, ReLU, dropout 0.5); a 3x3 conv-BN-ReLU; the 1x1 prediction.
* ``psp`` (:class:`PSPHead`): pyramid pooling (Zhao et al.), the branched-networks
  paper's Cityscapes decoder (Section 4.1): average pooling to each grid in
  ``psp_bins`` (1, 2, 3, 6), 1x1 conv-BN-ReLU of ``head_channels`` per grid,
  upsampled and concatenated with the input; a 3x3 conv-BN-ReLU of ``head_channels``;
  the 1x1 prediction (the decoder of Sener & Koltun's code, which the paper reuses).
* ``fcn`` (:class:`FCNHead`): the fully convolutional decoder of the Taskonomy setups
  (Zamir et al.; the branched-networks paper's Section 4.2, "a 15-layer fully
  convolutional decoder"): ``fcn_layers`` convolutions in all, the last the 1x1
  prediction; the others 3x3 conv-BN-ReLU in ``len(fcn_widths)`` stages of widths
  ``fcn_widths``, spread as evenly as possible (earlier stages take the remainder),
  with a 2x bilinear upsampling between consecutive stages.

Image-level tasks take ``linear`` (:class:`ImageHead`): every resolution
global-average-pooled, concatenated, one linear layer. A dense decoder for an
image-level task, or ``linear`` for a dense one, is a :class:`BadInput`.

Parameters and FLOPs of each head enter ``head_params`` / ``head_flops`` of
:meth:`branchnet.nn.branched.BranchedNet.costs` (docs/design.md, "Stages").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from branchnet.errors import BadInput, unknown_choice
from branchnet.registry import Registry
from branchnet.schema import ModelConfig


def _as_list(features) -> list[torch.Tensor]:
    return list(features) if isinstance(features, (list, tuple)) else [features]


def fuse(features) -> torch.Tensor:
    """One map from the last stage's output: (B, sum C_i, h_0, w_0), lower resolutions upsampled."""
    maps = _as_list(features)
    size = maps[0].shape[-2:]
    return torch.cat([maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                                  for m in maps[1:]], 1)


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU."""
    padding = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class DenseHead(nn.Module):
    """``simple``: (B, C_i, h_i, w_i) features -> (B, out_channels, H, W).

    Args:
        in_channels: channels of each resolution of the last stage's output.
        out_channels: predicted maps (classes, 1 for depth, 3 for normals ...).
        hidden: channels of the 3x3 fusion convolution.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, hidden: int) -> None:
        super().__init__()
        self.fuse = conv_bn_relu(sum(in_channels), hidden)
        self.predict = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, features, output_size: tuple[int, int]) -> torch.Tensor:
        return _upsample(self.predict(self.fuse(fuse(features))), output_size)


class ASPPPooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv-BN-ReLU, broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, out_channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample(self.conv(F.adaptive_avg_pool2d(x, 1)), x.shape[-2:])


class ASPPHead(nn.Module):
    """``aspp``: DeepLab-v3 ASPP and a 3x3 conv before the prediction (module docstring)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, width: int, rates: Sequence[int]) -> None:
        super().__init__()
        c = sum(in_channels)
        branches = [conv_bn_relu(c, width, kernel=1)]
        branches += [conv_bn_relu(c, width, kernel=3, dilation=int(r)) for r in rates]
        branches.append(ASPPPooling(c, width))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * width, width, 1, bias=False), nn.BatchNorm2d(width),
                                     nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.refine = conv_bn_relu(width, width)
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, features, output_size: tuple[int, int]) -> torch.Tensor:
        x = fuse(features)
        x = self.project(torch.cat([branch(x) for branch in self.branches], 1))
        return _upsample(self.predict(self.refine(x)), output_size)


class PSPHead(nn.Module):
    """``psp``: pyramid pooling over ``bins`` grids, a 3x3 conv, the prediction (module docstring)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, width: int, bins: Sequence[int]) -> None:
        super().__init__()
        c = sum(in_channels)
        self.bins = [int(b) for b in bins]
        self.pools = nn.ModuleList([conv_bn_relu(c, width, kernel=1) for _ in self.bins])
        self.fuse = conv_bn_relu(c + len(self.bins) * width, width)
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, features, output_size: tuple[int, int]) -> torch.Tensor:
        x = fuse(features)
        size = x.shape[-2:]
        pooled = [_upsample(conv(F.adaptive_avg_pool2d(x, b)), size) for b, conv in zip(self.bins, self.pools)]
        return _upsample(self.predict(self.fuse(torch.cat([x] + pooled, 1))), output_size)


def fcn_stage_depths(layers: int, stages: int) -> list[int]:
    """How many 3x3 convolutions each of ``stages`` stages gets out of ``layers - 1``."""
    hidden = layers - 1
    return [hidden // stages + (1 if k < hidden % stages else 0) for k in range(stages)]


class FCNHead(nn.Module):
    """``fcn``: stages of 3x3 conv-BN-ReLU with 2x upsampling between them (module docstring)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, layers: int, widths: Sequence[int]) -> None:
        super().__init__()
        stages = []
        c = sum(in_channels)
        for depth, width in zip(fcn_stage_depths(layers, len(widths)), widths):
            convs = []
            for _ in range(depth):
                convs.append(conv_bn_relu(c, int(width)))
                c = int(width)
            stages.append(nn.Sequential(*convs))
        self.stages = nn.ModuleList(stages)
        self.predict = nn.Conv2d(c, out_channels, 1)

    def forward(self, features, output_size: tuple[int, int]) -> torch.Tensor:
        x = fuse(features)
        for k, stage in enumerate(self.stages):
            if k:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = stage(x)
        return _upsample(self.predict(x), output_size)


class ImageHead(nn.Module):
    """``linear``: pooled features -> (B, out_channels) logits."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.classify = nn.Linear(sum(in_channels), out_channels)

    def forward(self, features, output_size: tuple[int, int] | None = None) -> torch.Tensor:
        pooled = [F.adaptive_avg_pool2d(m, 1).flatten(1) for m in _as_list(features)]
        return self.classify(torch.cat(pooled, 1))


@dataclass(frozen=True)
class HeadKind:
    """A registered head: whether it decodes dense tasks (else image-level ones), and how it is
    built from the last stage's channels, the task's output channels and the model section."""

    dense: bool
    build: Callable[[list[int], int, ModelConfig], nn.Module]


#: ``model.head`` / ``model.heads[task]``: name -> :class:`HeadKind`.
HEADS: Registry[HeadKind] = Registry("head", {
    "simple": HeadKind(True, lambda c, out, m: DenseHead(c, out, m.head_channels)),
    "aspp": HeadKind(True, lambda c, out, m: ASPPHead(c, out, m.head_channels, m.aspp_rates)),
    "psp": HeadKind(True, lambda c, out, m: PSPHead(c, out, m.head_channels, m.psp_bins)),
    "fcn": HeadKind(True, lambda c, out, m: FCNHead(c, out, m.fcn_layers, m.fcn_widths)),
    "linear": HeadKind(False, lambda c, out, m: ImageHead(c, out)),
})
#: The decoders of dense tasks (the values of ``model.head``); image-level tasks take the others.
DENSE_HEADS = tuple(name for name, kind in HEADS.items() if kind.dense)
#: The heads of image-level tasks.
IMAGE_HEADS = tuple(name for name, kind in HEADS.items() if not kind.dense)


def head_name(task, model: ModelConfig) -> str:
    """The head ``task`` gets: ``model.heads[task]``, else ``model.head`` (dense) or the image-level head.

    :class:`BadInput` (one line) for an unknown head, a dense decoder asked for an
    image-level task or ``linear`` for a dense task.
    """
    name = model.heads.get(task.name)
    explicit = name is not None
    if name is None:
        name = model.head if task.dense else IMAGE_HEADS[0]
    if name not in HEADS:
        key = f"model.heads.{task.name}" if explicit else "model.head"
        raise unknown_choice(f"head in {key}", name, HEADS.names)
    if not task.dense and HEADS[name].dense:
        raise BadInput(f"task '{task.name}' is image-level ({task.type_name}) but model.heads.{task.name} is "
                       f"'{name}', a dense decoder; image-level tasks take the 'linear' head (remove the entry)")
    if task.dense and not HEADS[name].dense:
        key = f"model.heads.{task.name}" if explicit else "model.head"
        raise BadInput(f"task '{task.name}' is dense ({task.type_name}) but {key} is '{name}', the image-level "
                       f"head; pick a dense decoder: {', '.join(DENSE_HEADS)}")
    return name


def build_head(task, in_channels: Sequence[int], model: ModelConfig) -> nn.Module:
    """The head of ``task`` (a :class:`branchnet.tasks.Task`) on features with ``in_channels``
    (one entry per resolution of the last stage): dense heads end in (B, out, H, W) at the
    input size, image-level ones in (B, out)."""
    return HEADS[head_name(task, model)].build(list(in_channels), task.out_channels, model)

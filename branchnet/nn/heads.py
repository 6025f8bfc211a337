"""Task heads (decoders) on top of the last encoder stage.

* :class:`DenseHead` fuses the last stage's output (HRNet: every resolution upsampled to
  the highest and concatenated, as in the survey's HRNet baseline), applies a 3x3
  conv-BN-ReLU and a 1x1 prediction conv, and upsamples bilinearly to the input size.
* :class:`ImageHead` global-average-pools each resolution, concatenates and classifies
  with one linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _as_list(features) -> list[torch.Tensor]:
    return list(features) if isinstance(features, (list, tuple)) else [features]


class DenseHead(nn.Module):
    """Per-pixel prediction: (B, C_i, h_i, w_i) features -> (B, out_channels, H, W).

    Args:
        in_channels: channels of each resolution of the last stage's output.
        out_channels: predicted maps (classes, 1 for depth, 3 for normals ...).
        hidden: channels of the 3x3 fusion convolution.
    """

    def __init__(self, in_channels: list[int], out_channels: int, hidden: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(
            nn.Conv2d(sum(in_channels), hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.predict = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, features, output_size: tuple[int, int]) -> torch.Tensor:
        maps = _as_list(features)
        size = maps[0].shape[-2:]
        x = torch.cat([maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                                   for m in maps[1:]], 1)
        x = self.predict(self.fuse(x))
        return F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)


class ImageHead(nn.Module):
    """Image-level prediction: pooled features -> (B, out_channels) logits."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.classify = nn.Linear(sum(in_channels), out_channels)

    def forward(self, features, output_size: tuple[int, int] | None = None) -> torch.Tensor:
        pooled = [F.adaptive_avg_pool2d(m, 1).flatten(1) for m in _as_list(features)]
        return self.classify(torch.cat(pooled, 1))


def build_head(task, in_channels: list[int], hidden: int) -> nn.Module:
    """The head for ``task`` (a :class:`branchnet.tasks.Task`): dense or image-level."""
    if task.dense:
        return DenseHead(list(in_channels), task.out_channels, hidden)
    return ImageHead(list(in_channels), task.out_channels)

"""Training-split augmentation: random scale, crop (or pad), horizontal flip, photometric jitter.

``data.augment`` in the config (:class:`branchnet.config.AugmentConfig`); only the
``train`` split is augmented. Per item, after the reader has brought image and labels
to ``data.image_size`` (H, W):

1. scale by s (drawn from ``scale`` or uniformly from ``scale_range``) to
   (round(H s), round(W s));
2. photometric jitter of the image (``jitter`` j > 0): brightness, contrast and
   saturation factors drawn from [1 - j, 1 + j], applied in that order (contrast and
   saturation about the ITU-R 601 grey), values clipped to [0, 255];
3. crop back to (H, W), at a random position (``crop: true``) or the centre; a scaled
   image smaller than (H, W) is placed in a canvas (``pad: true``) whose image pixels
   are the ImageNet mean colour (0 after normalisation) and whose label pixels carry
   the label's ignore / invalid value;
4. horizontal flip with probability 1/2 (``flip``).

Every label is transformed to match (its *kind*, from the task type; a reader may
override it, e.g. Cityscapes' disparity):

============ ===================================================== ===============
kind         resampling                                            padded with
============ ===================================================== ===============
classes      nearest neighbour (centre-aligned)                    ignore index
depth        bilinear over valid pixels only (value = weighted     0 (missing)
             mean of the valid taps, valid where their weight is
             >= 1/2), divided by s*
disparity    as depth, multiplied by s* of the width               0 (missing)
normals      as depth per component, renormalised; flip negates x  0-vector
edges        max over each output pixel's footprint (an edge       ignore value
             anywhere in it makes an edge, else ignore, else 0),
             so one-pixel edges survive downscaling
heatmap      bilinear when enlarging, footprint max when           0
             shrinking (peaks and thin lines survive)
offsets      (dy, dx, on) nearest neighbour, then each offset      0 (off)
             recomputed to point at the scaled centre exactly
             (x s per axis); flip negates dx
image        image-level labels: unchanged                         -
============ ===================================================== ===============

(s*: the factor the size really changed by, after rounding: the geometric mean of
the two axes' for depth, the width's for disparity, a horizontal pixel distance.)
Depth and disparity follow the survey's code (its ``ScaleNRotate`` divides depth by the
scale): an image enlarged by s looks like the camera moved s times closer, so depth
shrinks by s and disparity, inversely proportional to depth, grows by s.

Reproducible and resumable: the draws of item i in epoch e depend only on (seed, e, i)
(:func:`draw`), not on the order items are read, the worker that reads them or how
many epochs ran before a resume. With augmentation off the pipeline is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from branchnet.schema import AugmentConfig
from branchnet.data.ondisk import nearest_index
from branchnet.errors import BadInput

#: Label kind of each built-in task type (see the module docstring).
KIND_OF_TYPE = {
    "segmentation": "classes", "depth": "depth", "normals": "normals", "edges": "edges",
    "keypoints": "heatmap", "edge_map": "heatmap", "instance_offset": "offsets",
    "classification": "image", "attribute": "image", "attribute_group": "image",
}
KINDS = ("classes", "depth", "disparity", "normals", "edges", "heatmap", "offsets", "image")
#: ImageNet mean colour (0..255): padded image pixels normalise to 0.
PAD_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
GREY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Draw:
    """The random choices for one item: scale, crop origin in the scaled image (negative =
    padding before it), flip, and the jitter factors."""

    scale: float = 1.0
    top: int = 0
    left: int = 0
    flip: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0


@dataclass(frozen=True)
class LabelRule:
    """How one task's target is transformed: its kind and the value of padded pixels."""

    kind: str
    fill: float = 0.0
    #: ``edges``: the ignore value.
    ignore: float = 255.0


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) scaled by ``scale``, rounded, at least 1 x 1."""
    return max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale)))


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` in ``epoch``: a function of (seed, epoch, index) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index)]))


def draw(config: AugmentConfig, size: tuple[int, int], seed: int, epoch: int, index: int) -> Draw:
    """The draws of item ``index`` in ``epoch``: seven numbers in a fixed order, whatever the options."""
    rng = item_rng(seed, epoch, index)
    u_scale, u_top, u_left, u_flip = rng.random(4)
    factors = rng.uniform(-1.0, 1.0, size=3)
    if config.scale_range is not None:
        low, high = (float(v) for v in config.scale_range)
        scale = low + (high - low) * u_scale
    elif config.scale:
        scale = float(config.scale[min(int(u_scale * len(config.scale)), len(config.scale) - 1)])
    else:
        scale = 1.0
    sh, sw = scaled_size(size, scale)
    origin = []
    for u, scaled, target in ((u_top, sh, size[0]), (u_left, sw, size[1])):
        low, high = min(0, scaled - target), max(0, scaled - target)
        if not config.crop:
            origin.append((scaled - target) // 2)
        else:
            origin.append(low + min(int(u * (high - low + 1)), high - low))
    j = float(config.jitter)
    b, c, s = (1.0 + j * f for f in factors) if j > 0 else (1.0, 1.0, 1.0)
    return Draw(scale, origin[0], origin[1], bool(config.flip and u_flip < 0.5), b, c, s)


# --------------------------------------------------------------------------------------
# Resampling (C, h, w) -> (C, sh, sw)


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]


def _masked_bilinear(x: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear over valid pixels only: weighted mean of the valid taps, valid where their weight >= 1/2."""
    weight = _bilinear(valid.float(), size)
    total = _bilinear(torch.where(valid, x, torch.zeros_like(x)), size)
    keep = weight >= 0.5 - 1e-6
    return torch.where(keep, total / weight.clamp_min(1e-6), torch.zeros_like(total)), keep


def _nearest_indices(n_in: int, n_out: int) -> torch.Tensor:
    return torch.from_numpy(nearest_index(n_in, n_out))


def _nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    rows = _nearest_indices(x.shape[-2], size[0])
    cols = _nearest_indices(x.shape[-1], size[1])
    return x.index_select(-2, rows).index_select(-1, cols)


def _max_along(x: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    """Max over each output sample's footprint [i n/m, (i+1) n/m) of the n input samples."""
    n_in = x.shape[dim]
    i = np.arange(n_out)
    low = (i * n_in) // n_out
    high = np.maximum(-((-(i + 1) * n_in) // n_out), low + 1)
    out = None
    for k in range(int((high - low).max())):
        part = x.index_select(dim, torch.from_numpy(np.minimum(low + k, high - 1)))
        out = part if out is None else torch.maximum(out, part)
    return out


def footprint_max(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, sh, sw): each output pixel the max of the input pixels its area overlaps."""
    return _max_along(_max_along(x, -2, size[0]), -1, size[1])


def _place(x: torch.Tensor, top: int, left: int, size: tuple[int, int], fill) -> torch.Tensor:
    """Window (top, left, H, W) of ``x`` (C, h, w); outside ``x`` is ``fill`` (per channel or scalar)."""
    h, w = x.shape[-2:]
    height, width = size
    if (top, left, h, w) == (0, 0, height, width):
        return x
    out = torch.empty(x.shape[:-2] + (height, width), dtype=x.dtype)
    fill = torch.as_tensor(fill, dtype=x.dtype)
    out[...] = fill.view(-1, 1, 1) if fill.dim() else fill
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, h), min(left + width, w)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = x[..., y0:y1, x0:x1]
    return out


# --------------------------------------------------------------------------------------
# Labels


def _valid_depth(x: torch.Tensor) -> torch.Tensor:
    return (x > 0) & torch.isfinite(x)


def _scale_label(target: torch.Tensor, rule: LabelRule, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H', W') at ``size``; depth and disparity values rescaled (module docstring)."""
    kind = rule.kind
    fy, fx = size[0] / target.shape[-2], size[1] / target.shape[-1]
    if kind == "classes":
        return _nearest(target, size)
    if kind in ("depth", "disparity"):
        value, _ = _masked_bilinear(target.float(), _valid_depth(target), size)
        return value / math.sqrt(fy * fx) if kind == "depth" else value * fx
    if kind == "normals":
        valid = target.norm(dim=0) > 0.5
        value, keep = _masked_bilinear(target.float(), valid[None].expand_as(target), size)
        norm = value.norm(dim=0, keepdim=True)
        keep = keep[0] & (norm[0] > 1e-6)
        return torch.where(keep[None], value / norm.clamp_min(1e-12), torch.zeros_like(value))
    if kind == "edges":
        ignore = target == rule.ignore
        rank = torch.where(ignore, 1, torch.where(target > 0.5, 2, 0)).to(torch.uint8)
        rank = footprint_max(rank, size)
        return torch.where(rank == 2, 1.0, torch.where(rank == 1, rule.ignore, 0.0)).to(target.dtype)
    if kind == "heatmap":
        if size[0] >= target.shape[-2] and size[1] >= target.shape[-1]:
            return _bilinear(target, size).to(target.dtype)
        return footprint_max(target, size)
    if kind == "offsets":
        h, w = target.shape[-2:]
        rows, cols = _nearest_indices(h, size[0]), _nearest_indices(w, size[1])
        picked = target.index_select(-2, rows).index_select(-1, cols).clone()
        # the source position of each output pixel (centre-aligned) and its nearest source pixel
        y_src = (torch.arange(size[0], dtype=torch.float64) + 0.5) / fy - 0.5
        x_src = (torch.arange(size[1], dtype=torch.float64) + 0.5) / fx - 0.5
        on = picked[2] > 0.5
        dy = fy * (picked[0].double() + (rows.double() - y_src)[:, None])
        dx = fx * (picked[1].double() + (cols.double() - x_src)[None, :])
        picked[0] = torch.where(on, dy, 0.0).to(target.dtype)
        picked[1] = torch.where(on, dx, 0.0).to(target.dtype)
        return picked
    raise AssertionError(kind)  # pragma: no cover - kinds are checked when rules are made


def _flip_label(target: torch.Tensor, rule: LabelRule) -> torch.Tensor:
    out = torch.flip(target, dims=[-1])
    if rule.kind == "normals":
        out = out.clone()
        out[0] = -out[0]
    elif rule.kind == "offsets":
        out = out.clone()
        out[1] = -out[1]
    return out


def _jitter(image: torch.Tensor, d: Draw) -> torch.Tensor:
    x = image.float() * d.brightness
    grey = sum(w * x[c] for c, w in enumerate(GREY))
    mean = grey.mean()
    x = (x - mean) * d.contrast + mean
    grey = sum(w * x[c] for c, w in enumerate(GREY))
    x = grey + (x - grey) * d.saturation
    return x.clamp(0.0, 255.0)


def apply(image: torch.Tensor, targets: Mapping[str, torch.Tensor], rules: Mapping[str, LabelRule],
          d: Draw, size: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Transform one item with the draws ``d``; ``size`` (H, W) is the output size.

    ``image``: uint8 or float (3, h, w) in 0..255; returns the image as float32 in 0..255
    (or the input tensor itself when ``d`` changes nothing) and the targets.
    """
    out = dict(targets)
    h, w = image.shape[-2:]
    scaled = scaled_size((h, w), d.scale) if d.scale != 1.0 else (h, w)
    if scaled != (h, w):
        image = _bilinear(image, scaled).clamp(0.0, 255.0)
        for task, rule in rules.items():
            if rule.kind != "image":
                out[task] = _scale_label(_as_chw(out[task]), rule, scaled).reshape(
                    out[task].shape[:-2] + scaled)
    if (d.brightness, d.contrast, d.saturation) != (1.0, 1.0, 1.0):
        image = _jitter(image, d)
    image = _place(image.float() if image.dtype != torch.uint8 else image, d.top, d.left, size,
                   PAD_RGB if image.dtype != torch.uint8 else [int(round(v)) for v in PAD_RGB])
    for task, rule in rules.items():
        if rule.kind != "image":
            target = _as_chw(out[task])
            placed = _place(target, d.top, d.left, size, rule.fill)
            out[task] = placed.reshape(out[task].shape[:-2] + size)
    if d.flip:
        image = torch.flip(image, dims=[-1])
        for task, rule in rules.items():
            if rule.kind != "image":
                out[task] = _flip_label(_as_chw(out[task]), rule).reshape(out[task].shape)
    return image, out


def _as_chw(x: torch.Tensor) -> torch.Tensor:
    """A (H, W) class map as (1, H, W); (C, H, W) as is."""
    return x[None] if x.dim() == 2 else x


class Augmenter:
    """The augmentation of one dataset: its config, output size and a rule per task."""

    def __init__(self, config: AugmentConfig, size: tuple[int, int], rules: Mapping[str, LabelRule]) -> None:
        self.config = config
        self.size = (int(size[0]), int(size[1]))
        self.rules = dict(rules)

    def __call__(self, image: torch.Tensor, targets: Mapping[str, torch.Tensor], seed: int, epoch: int,
                 index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        d = draw(self.config, tuple(image.shape[-2:]), seed, epoch, index)
        return apply(image, targets, self.rules, d, self.size)


def label_rule(task: str, type_name: str, kind: str | None, ignore_index: int | None,
               options: Mapping[str, object]) -> LabelRule:
    """The rule of a task of type ``type_name`` (``kind`` overrides the type's kind)."""
    kind = kind or KIND_OF_TYPE.get(type_name)
    if kind not in KINDS:
        raise BadInput(f"task '{task}' (type {type_name}) has no augmentation rule; set data.augment to null, or "
                       f"give its reader a label kind ({', '.join(KINDS)})")
    if kind == "classes":
        return LabelRule(kind, float(-100 if ignore_index is None else ignore_index))
    if kind == "edges":
        ignore = float(options.get("ignore_value", 255))  # type: ignore[arg-type]
        return LabelRule(kind, ignore, ignore)
    return LabelRule(kind)


def check_safe(config: AugmentConfig, unsafe: Mapping[str, set[str]], dataset: str) -> None:
    """:class:`BadInput` when a transform would falsify the labels of configured tasks.

    ``unsafe`` maps ``flip``, ``geometry`` (scale or crop) and ``jitter`` to the tasks
    whose labels that transform changes (e.g. left/right classes under a flip).
    """
    geometric = any(float(s) != 1.0 for s in (config.scale_range or config.scale or [1.0]))
    used = {"flip": config.flip, "geometry": geometric, "jitter": config.jitter > 0}
    advice = {"flip": "set data.augment.flip: false", "geometry": "use scale: [1.0]",
              "jitter": "set data.augment.jitter: 0"}
    for transform, tasks in unsafe.items():
        if used.get(transform) and tasks:
            names = ", ".join(sorted(tasks))
            raise BadInput(f"data.augment: {transform} would change the labels of {dataset} task(s) {names} "
                           f"(they depend on {_WHAT[transform]}); {advice[transform]} or drop those tasks")


_WHAT = {"flip": "left and right", "geometry": "what the crop keeps", "jitter": "colour and brightness"}

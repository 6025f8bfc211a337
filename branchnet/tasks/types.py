"""The built-in task types: each bundles its head shape, its loss, its metrics and its main metric.

Target conventions (what datasets return, per image; batched by the DataLoader):

=================  ======================================  ================================
type               target                                  prediction (network output)
=================  ======================================  ================================
segmentation       int64 (H, W) class ids, ignore_index    logits (C, H, W)
depth              float32 (1, H, W), 0 = missing          depth (1, H, W)
normals            float32 (3, H, W) unit, 0-vector = miss  (3, H, W), normalised in the loss
edges              float32 (1, H, W) in {0, 1}, 255 = ign.  logit (1, H, W)
keypoints          float32 (1, H, W) heatmap in [0, 1]      heatmap (1, H, W)
classification     int64 () class id                        logits (C,)
attribute          float32 () in {0, 1}                     logit (1,)
=================  ======================================  ================================
"""


from __future__ import annotations

import torch
import torch.nn.functional as F

from branchnet.errors import BadInput
from branchnet.tasks.base import Task, register_task_type
from branchnet.tasks.metrics import (AngularErrors, Accuracy, BoundaryF, Combined, ConfusionMatrix, MeanAccumulator,
                                     RegressionErrors, ThresholdF)


def _count(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum().to(torch.float32)


def _masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` where ``mask`` holds (same shape). ``torch.where`` rather than
    ``values[mask]``: boolean indexing costs a nonzero, a gather and a scatter in the backward."""
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()


def _squared_length(vectors: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W): the squared length of every pixel's C-vector. Written out because
    ``Tensor.norm(dim=1)`` (and ``F.normalize``) of an NCHW tensor is about 30x slower on a CPU."""
    return (vectors * vectors).sum(1)


def _unit(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(vectors, dim=1)``: every pixel's C-vector divided by max(its length, ``eps``)."""
    return vectors / _squared_length(vectors).sqrt().clamp_min(eps).unsqueeze(1)


def _choose_main_metric(task: Task, choices: tuple[str, ...]) -> None:
    """Set ``task.main_metric`` from its ``main_metric`` option (one of ``choices``)."""
    chosen = task.options.get("main_metric") or choices[0]
    if chosen not in choices:
        raise BadInput(f"task '{task.name}': option main_metric is {chosen!r}; valid for type "
                       f"{task.type_name}: {', '.join(choices)}")
    task.main_metric = chosen


@register_task_type
class Segmentation(Task):
    """Semantic segmentation: cross-entropy; mIoU (%), higher is better."""

    type_name = "segmentation"
    dense = True
    main_metric = "mIoU"
    higher_is_better = True

    @property
    def out_channels(self) -> int:
        if not self.spec.num_classes:
            raise BadInput(f"task '{self.name}': segmentation needs num_classes from the dataset")
        return int(self.spec.num_classes)

    def _ignore(self) -> int:
        return -100 if self.spec.ignore_index is None else int(self.spec.ignore_index)

    def loss_terms(self, pred, target):
        target = target.long()
        total = F.cross_entropy(pred, target, ignore_index=self._ignore(), reduction="sum")
        valid = target != self._ignore()
        return total, _count(valid)

    def example_target(self, size, generator):
        target = torch.randint(0, self.out_channels, size, generator=generator)
        if self.spec.ignore_index is not None:
            target[0, 0] = self.spec.ignore_index
        return target

    def make_accumulator(self):
        return ConfusionMatrix(self.out_channels, self.spec.ignore_index)

    def update_metrics(self, acc, pred, target):
        acc.update(pred, target)


@register_task_type
class Depth(Task):
    """Depth: L1 loss on valid pixels (target > 0); RMSE, lower is better.

    Metrics over valid pixels, in the target's unit (metres; pixels for disparity):
    ``rmse``, ``log_rmse``, ``mae``, ``abs_rel``, ``delta1``. Option ``main_metric``
    (``rmse``, ``mae``, ``log_rmse`` or ``abs_rel``, all lower-is-better) picks the one
    Δ_MTL uses: the survey's NYUD-v2 tables use RMSE; Cityscapes' "D (px)" is the mean
    absolute disparity error (``mae``, Sener & Koltun's evaluation, which the
    branched-networks paper follows).
    """

    type_name = "depth"
    dense = True
    main_metric = "rmse"
    higher_is_better = False
    default_options = {"main_metric": "rmse"}
    METRICS = ("rmse", "mae", "log_rmse", "abs_rel")

    out_channels = 1  # type: ignore[assignment]

    def __init__(self, name, spec, options=None) -> None:
        super().__init__(name, spec, options)
        _choose_main_metric(self, self.METRICS)

    @staticmethod
    def _valid(target):
        return (target > 0) & torch.isfinite(target)

    def loss_terms(self, pred, target):
        valid = self._valid(target)
        # masked before abs: a missing (NaN) target must give its pixel a zero gradient
        return torch.where(valid, pred - target, torch.zeros_like(pred)).abs().sum(), _count(valid)

    def example_target(self, size, generator):
        target = 0.5 + 9.0 * torch.rand((1, *size), generator=generator)
        target[0, 0, 0] = 0.0  # missing
        return target

    def make_accumulator(self):
        return RegressionErrors()

    def update_metrics(self, acc, pred, target):
        acc.update(pred, target, self._valid(target))


@register_task_type
class Normals(Task):
    """Surface normals: 1 - cosine similarity; mean angular error (degrees), lower is better."""

    type_name = "normals"
    dense = True
    main_metric = "mean"
    higher_is_better = False

    out_channels = 3  # type: ignore[assignment]

    @staticmethod
    def _valid(target):
        return _squared_length(target) > 0.25  # length > 0.5: a unit vector, not the 0-vector of "missing"

    def loss_terms(self, pred, target):
        valid = self._valid(target)
        target = torch.where(valid.unsqueeze(1), target, torch.zeros_like(target))  # no NaN into the gradient
        cos = (_unit(pred) * target).sum(1)
        return _masked_sum(1.0 - cos, valid), _count(valid)

    def example_target(self, size, generator):
        target = F.normalize(torch.randn((3, *size), generator=generator), dim=0)
        target[:, 0, 0] = 0.0  # missing
        return target

    def make_accumulator(self):
        return AngularErrors()

    def update_metrics(self, acc, pred, target):
        acc.update(_unit(pred), target, self._valid(target))


@register_task_type
class Edges(Task):
    """Edge detection: class-balanced BCE (weight ``pos_weight`` on edges); odsF (%), higher.

    ``odsF`` is the benchmarks' optimal-dataset-scale F-measure with boundary matching
    within ``max_dist`` times the image diagonal (:class:`~branchnet.tasks.metrics.BoundaryF`;
    0.0075 as PASCAL-Context, 0.011 for NYUD-v2), with ``odsP``, ``odsR`` and
    ``ods_threshold``; ``matching`` is ``dilation`` (fast) or ``exact`` (one-to-one
    matching, slow). ``pixel_odsF`` and ``pixel_F@0.5`` count hits per pixel without a
    tolerance (the main metric before the benchmark protocol).
    """

    type_name = "edges"
    dense = True
    main_metric = "odsF"
    higher_is_better = True
    default_options = {"pos_weight": 0.95, "ignore_value": 255, "max_dist": 0.0075, "matching": "dilation"}

    out_channels = 1  # type: ignore[assignment]

    def __init__(self, name, spec, options=None) -> None:
        super().__init__(name, spec, options)
        max_dist = self.options["max_dist"]
        if isinstance(max_dist, bool) or not isinstance(max_dist, (int, float)) or not 0 <= max_dist < 1:
            raise BadInput(f"task '{name}': option max_dist is {max_dist!r}; it must be a fraction of the image "
                           "diagonal in [0, 1), e.g. 0.0075 (PASCAL-Context) or 0.011 (NYUD-v2)")
        if self.options["matching"] not in ("dilation", "exact"):
            raise BadInput(f"task '{name}': option matching is {self.options['matching']!r}; valid: dilation, exact")

    def _valid(self, target):
        return target != self.options["ignore_value"]

    def loss_terms(self, pred, target):
        valid = self._valid(target)
        y = torch.where(valid, target, torch.zeros_like(target))
        w = self.options["pos_weight"]
        weight = torch.where(y > 0.5, torch.full_like(y, w), torch.full_like(y, 1.0 - w))
        loss = F.binary_cross_entropy_with_logits(pred, y, weight=weight, reduction="none")
        return _masked_sum(loss, valid), _count(valid)

    def example_target(self, size, generator):
        target = (torch.rand((1, *size), generator=generator) < 0.2).float()
        target[0, 0, 0] = float(self.options["ignore_value"])
        return target

    def make_accumulator(self):
        return Combined(BoundaryF(self.options["max_dist"], self.options["matching"]), ThresholdF(prefix="pixel_"))

    def update_metrics(self, acc, pred, target):
        acc.update(torch.sigmoid(pred), target, self._valid(target))


@register_task_type
class Keypoints(Task):
    """Keypoint heatmaps: L1 loss; mean absolute error per pixel ("l1"), lower is better."""

    type_name = "keypoints"
    dense = True
    main_metric = "l1"
    higher_is_better = False

    out_channels = 1  # type: ignore[assignment]

    def loss_terms(self, pred, target):
        return (pred - target).abs().sum(), torch.tensor(float(target.numel()))

    def example_target(self, size, generator):
        return torch.rand((1, *size), generator=generator)

    def make_accumulator(self):
        return MeanAccumulator("l1")

    def update_metrics(self, acc, pred, target):
        acc.update((pred - target).abs().sum(), target.numel())


@register_task_type
class Classification(Task):
    """Image classification: cross-entropy; accuracy (%), higher is better.

    ``accuracy`` is top-1, ``top5`` is reported beside it with more than 5 classes; option
    ``main_metric`` (``accuracy`` or ``top5``) picks the one Δ_MTL uses (Taskonomy's
    scene classification: top-5, the branched-networks paper's Table 1).
    """

    type_name = "classification"
    dense = False
    main_metric = "accuracy"
    higher_is_better = True
    default_options = {"main_metric": "accuracy"}

    def __init__(self, name, spec, options=None) -> None:
        super().__init__(name, spec, options)
        _choose_main_metric(self, ("accuracy", "top5"))
        if self.main_metric == "top5" and (spec.num_classes or 0) <= 5:
            raise BadInput(f"task '{name}': main_metric top5 needs more than 5 classes, it has {spec.num_classes}")

    @property
    def out_channels(self) -> int:
        if not self.spec.num_classes:
            raise BadInput(f"task '{self.name}': classification needs num_classes from the dataset")
        return int(self.spec.num_classes)

    def loss_terms(self, pred, target):
        target = target.long()
        return F.cross_entropy(pred, target, reduction="sum"), torch.tensor(float(target.numel()))

    def example_target(self, size, generator):
        return torch.randint(0, self.out_channels, (), generator=generator)

    def make_accumulator(self):
        return Accuracy()

    def update_metrics(self, acc, pred, target):
        target = target.long()
        top1 = pred.argmax(1) == target
        top5 = None
        if pred.shape[1] > 5:
            top5 = (pred.topk(5, dim=1).indices == target[:, None]).any(1)
        acc.update(top1, top5)


@register_task_type
class Attribute(Task):
    """Binary attribute: binary cross-entropy; accuracy (%), higher is better."""

    type_name = "attribute"
    dense = False
    main_metric = "accuracy"
    higher_is_better = True

    out_channels = 1  # type: ignore[assignment]

    def loss_terms(self, pred, target):
        pred = pred.reshape(-1)
        target = target.reshape(-1).float()
        return (F.binary_cross_entropy_with_logits(pred, target, reduction="sum"),
                torch.tensor(float(target.numel())))

    def example_target(self, size, generator):
        return (torch.rand((), generator=generator) < 0.5).float()

    def make_accumulator(self):
        return Accuracy()

    def update_metrics(self, acc, pred, target):
        acc.update((pred.reshape(-1) > 0) == (target.reshape(-1) > 0.5))

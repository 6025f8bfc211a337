"""Task types that only some datasets need (registered like those of :mod:`branchnet.tasks`).

=================  ======================================  ================================
type               target                                  prediction (network output)
=================  ======================================  ================================
instance_offset    float32 (3, H, W): (dy, dx, on)         offsets (2, H, W)
attribute_group    float32 (K,) in {0, 1}                  logits (K,)
edge_map           float32 (1, H, W) edge strength [0, 1]  map (1, H, W)
=================  ======================================  ================================

``instance_offset`` is the instance-segmentation proxy of Kendall et al. (CVPR 2018),
used on Cityscapes by the branched-networks paper (Section 4.1): each pixel of an
instance regresses the vector (dy, dx), in pixels of the network input, from itself to
the centre (mean pixel position) of its instance. Channel 2 of the target is 1 on
instance pixels and 0 elsewhere; only instance pixels count. Loss: L1 per component;
metrics ``mean_error`` (mean Euclidean length of the offset error, pixels) and ``l1``
(mean absolute error per component, pixels: the evaluation of Sener & Koltun's code,
which the branched-networks paper follows for "I (px)"); option ``main_metric`` picks
the one Δ_MTL uses (default ``mean_error``; the Cityscapes reader sets ``l1``), both
lower is better.

``attribute_group`` is one task made of K binary attributes (Maximum Roaming's CelebA
groups, its Appendix "Celeb-A"): binary cross-entropy averaged over the group's
attributes; ``accuracy`` (%) over all attribute decisions, and the per-attribute mean
``f1`` (%).

``edge_map`` is a continuous edge map (Taskonomy's ``edge_occlusion``), regressed with
an L1 loss as Standley et al. and the branched-networks paper (Table 1, "E (L1)") do;
main metric ``l1``, lower is better.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from branchnet.errors import BadInput
from branchnet.tasks.metrics import Accumulator
from branchnet.tasks.base import Task, register_task_type
from branchnet.tasks.types import Keypoints


class OffsetErrors(Accumulator):
    """Offset regression: ``mean_error`` (mean Euclidean error, px) and ``l1`` (per component)."""

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """``pred`` and ``target`` (B, 2, H, W); ``valid`` (B, H, W) bool."""
        diff = (pred.float() - target.float()).permute(0, 2, 3, 1)[valid].double()  # (P, 2)
        self._add("n", valid.sum())
        self._add("euclid", diff.norm(dim=1).sum())
        self._add("abs", diff.abs().sum())

    def compute(self) -> dict[str, float]:
        n = float(self.state.get("n", 0.0))
        if not n:
            return {"mean_error": math.nan, "l1": math.nan}
        return {"mean_error": float(self.state["euclid"]) / n, "l1": float(self.state["abs"]) / (2 * n)}


@register_task_type
class InstanceOffset(Task):
    """Instance-centre regression: L1 on instance pixels; mean offset error (px), lower is better."""

    type_name = "instance_offset"
    dense = True
    main_metric = "mean_error"
    higher_is_better = False
    default_options = {"main_metric": "mean_error"}

    out_channels = 2  # type: ignore[assignment]

    def __init__(self, name, spec, options=None) -> None:
        super().__init__(name, spec, options)
        chosen = self.options["main_metric"]
        if chosen not in ("mean_error", "l1"):
            raise BadInput(f"task '{name}': option main_metric is {chosen!r}; valid for type instance_offset: "
                           "mean_error, l1")
        self.main_metric = chosen

    @staticmethod
    def _split(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if target.dim() != 4 or target.shape[1] != 3:
            raise BadInput(f"instance_offset targets must be (B, 3, H, W) = (dy, dx, on), got {tuple(target.shape)}")
        return target[:, :2], target[:, 2] > 0.5

    def loss_terms(self, pred, target):
        offsets, valid = self._split(target)
        err = (pred - offsets).abs().sum(1)  # (B, H, W): both components
        return err[valid].sum(), 2.0 * valid.sum().to(torch.float32)

    def example_target(self, size, generator):
        target = torch.randn((3, *size), generator=generator) * 4.0
        target[2] = (torch.rand(size, generator=generator) < 0.5).float()  # instance pixels
        return target

    def make_accumulator(self):
        return OffsetErrors()

    def update_metrics(self, acc, pred, target):
        offsets, valid = self._split(target)
        acc.update(pred, offsets, valid)


class AttributeCounts(Accumulator):
    """K binary attributes: ``accuracy`` (%) over all decisions and mean per-attribute ``f1`` (%)."""

    def update(self, predicted: torch.Tensor, truth: torch.Tensor) -> None:
        """``predicted`` and ``truth`` (B, K) bool."""
        self._add("tp", (predicted & truth).sum(0))
        self._add("fp", (predicted & ~truth).sum(0))
        self._add("fn", (~predicted & truth).sum(0))
        self._add("tn", (~predicted & ~truth).sum(0))

    def compute(self) -> dict[str, float]:
        if "tp" not in self.state:
            return {"accuracy": math.nan, "f1": math.nan}
        tp, fp, fn, tn = (self.state[k] for k in ("tp", "fp", "fn", "tn"))
        total = tp + fp + fn + tn
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        return {"accuracy": 100.0 * float((tp + tn).sum() / total.sum()), "f1": 100.0 * float(f1.mean())}


@register_task_type
class AttributeGroup(Task):
    """K binary attributes as one task: mean BCE; accuracy (%), higher is better."""

    type_name = "attribute_group"
    dense = False
    main_metric = "accuracy"
    higher_is_better = True

    @property
    def out_channels(self) -> int:
        if not self.spec.num_classes:
            raise BadInput(f"task '{self.name}': attribute_group needs num_classes (the group size) from the dataset")
        return int(self.spec.num_classes)

    def loss_terms(self, pred, target):
        target = target.float().reshape(pred.shape)
        return (F.binary_cross_entropy_with_logits(pred, target, reduction="sum"),
                torch.tensor(float(target.numel())))

    def example_target(self, size, generator):
        return (torch.rand(self.out_channels, generator=generator) < 0.5).float()

    def make_accumulator(self):
        return AttributeCounts()

    def update_metrics(self, acc, pred, target):
        acc.update(pred > 0, target.reshape(pred.shape) > 0.5)


@register_task_type
class EdgeMap(Keypoints):
    """Continuous edge strength in [0, 1]: L1 loss; mean absolute error ("l1"), lower is better."""

    type_name = "edge_map"

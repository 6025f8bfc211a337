"""Split-level metric accumulators.

Each accumulator sums exact statistics over a whole split (confusion matrices, sums of
errors and their counts, histograms), so a metric is computed once at the end and is
not an average of batch averages. The statistics live in float64 tensors in
``self.state``, which :meth:`Accumulator.all_reduce` sums across processes under
``torch.distributed``.
"""

from __future__ import annotations

import math

import torch


class Accumulator:
    """Base class: ``update`` with each batch, ``compute`` once at the end."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def _add(self, key: str, value: torch.Tensor | float) -> None:
        value = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        if key in self.state:
            self.state[key] += value
        else:
            self.state[key] = value.clone()

    def all_reduce(self) -> None:
        """Sum the statistics over all processes (no-op outside torch.distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        for key in sorted(self.state):
            value = self.state[key].to(device)
            dist.all_reduce(value)
            self.state[key] = value.cpu()

    def compute(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


class MeanAccumulator(Accumulator):
    """Mean of a quantity given as (sum, count) pairs, e.g. a loss over pixels."""

    def __init__(self, name: str = "loss") -> None:
        super().__init__()
        self.name = name

    def update(self, total: torch.Tensor | float, count: torch.Tensor | float) -> None:
        self._add("sum", total)
        self._add("count", count)

    def compute(self) -> dict[str, float]:
        count = float(self.state.get("count", 0.0))
        return {self.name: float(self.state["sum"]) / count if count else math.nan}


class ConfusionMatrix(Accumulator):
    """Semantic segmentation: a C x C confusion matrix (rows: truth, columns: prediction).

    ``compute`` gives ``mIoU`` (%, mean over classes that occur in truth or prediction),
    ``pixel_acc`` (%) and ``mean_acc`` (%, over classes present in the truth).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """``logits`` (B, C, H, W); ``target`` (B, H, W) class ids, ``ignore_index`` skipped."""
        pred = logits.argmax(1).flatten()
        target = target.flatten().long()
        valid = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        index = target[valid] * self.num_classes + pred[valid]
        counts = torch.bincount(index, minlength=self.num_classes ** 2)
        self._add("confusion", counts.reshape(self.num_classes, self.num_classes))

    def compute(self) -> dict[str, float]:
        cm = self.state.get("confusion", torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64))
        tp = cm.diagonal()
        truth = cm.sum(1)
        union = truth + cm.sum(0) - tp
        present = union > 0
        iou = tp[present] / union[present]
        total = cm.sum()
        acc_present = truth > 0
        return {
            "mIoU": 100.0 * float(iou.mean()) if present.any() else math.nan,
            "pixel_acc": 100.0 * float(tp.sum() / total) if total > 0 else math.nan,
            "mean_acc": 100.0 * float((tp[acc_present] / truth[acc_present]).mean()) if acc_present.any() else math.nan,
        }


class RegressionErrors(Accumulator):
    """Dense regression (depth): RMSE, MAE, mean relative error, and delta < 1.25 (%).

    Pixels where ``valid`` is False are skipped (e.g. missing depth).
    """

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        pred = pred.float()[valid]
        target = target.float()[valid]
        err = pred - target
        self._add("n", valid.sum())
        self._add("sq", (err.double() ** 2).sum())
        self._add("abs", err.double().abs().sum())
        positive = target > 0
        self._add("n_pos", positive.sum())
        self._add("rel", (err[positive].double().abs() / target[positive].double()).sum())
        ratio = torch.maximum(pred[positive] / target[positive], target[positive] / pred[positive].clamp_min(1e-12))
        self._add("delta1", ((pred[positive] > 0) & (ratio < 1.25)).sum())

    def compute(self) -> dict[str, float]:
        n = float(self.state.get("n", 0.0))
        n_pos = float(self.state.get("n_pos", 0.0))
        if not n:
            return {"rmse": math.nan, "mae": math.nan, "abs_rel": math.nan, "delta1": math.nan}
        return {
            "rmse": math.sqrt(float(self.state["sq"]) / n),
            "mae": float(self.state["abs"]) / n,
            "abs_rel": float(self.state["rel"]) / n_pos if n_pos else math.nan,
            "delta1": 100.0 * float(self.state["delta1"]) / n_pos if n_pos else math.nan,
        }


class AngularErrors(Accumulator):
    """Surface normals: angle between predicted and true unit normals, in degrees.

    ``mean``, ``rmse`` and ``median`` angle (the median from a 0.1 degree histogram,
    interpolated within its bin) and the % of pixels within 11.25, 22.5 and 30 degrees.
    """

    BINS = 1800  # 0.1 degree

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """``pred`` and ``target`` (B, 3, H, W) unit vectors; ``valid`` (B, H, W)."""
        cos = (pred.float() * target.float()).sum(1).clamp(-1.0, 1.0)[valid]
        angle = torch.rad2deg(torch.acos(cos.double()))
        self._add("n", angle.numel())
        self._add("sum", angle.sum())
        self._add("sq", (angle ** 2).sum())
        for limit in (11.25, 22.5, 30.0):
            self._add(f"within_{limit}", (angle < limit).sum())
        self._add("hist", torch.histc(angle, bins=self.BINS, min=0.0, max=180.0))

    def compute(self) -> dict[str, float]:
        n = float(self.state.get("n", 0.0))
        if not n:
            return {"mean": math.nan, "median": math.nan, "rmse": math.nan,
                    "within_11.25": math.nan, "within_22.5": math.nan, "within_30": math.nan}
        hist = self.state["hist"]
        cumulative = torch.cumsum(hist, 0)
        k = int(torch.searchsorted(cumulative, torch.tensor(n / 2, dtype=torch.float64)))
        before = float(cumulative[k - 1]) if k > 0 else 0.0
        inside = float(hist[k]) or 1.0
        width = 180.0 / self.BINS
        median = (k + (n / 2 - before) / inside) * width
        return {
            "mean": float(self.state["sum"]) / n,
            "median": median,
            "rmse": math.sqrt(float(self.state["sq"]) / n),
            "within_11.25": 100.0 * float(self.state["within_11.25"]) / n,
            "within_22.5": 100.0 * float(self.state["within_22.5"]) / n,
            "within_30": 100.0 * float(self.state["within_30.0"]) / n,
        }


class ThresholdF(Accumulator):
    """Binary dense prediction (edges): precision/recall/F at 99 fixed thresholds.

    ``odsF`` (%) is the best F over thresholds fixed for the whole split (the
    optimal-dataset-scale F-measure, here per pixel without a matching tolerance);
    ``F@0.5`` (%) uses threshold 0.5.
    """

    THRESHOLDS = 99

    def update(self, prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        prob = prob.float()[valid]
        positive = target[valid] > 0.5
        bins = self.THRESHOLDS + 1
        # bucket b holds probabilities in [b/100, (b+1)/100); threshold t_j = j/100 for j = 1..99,
        # so a pixel is predicted positive at t_j exactly when its bucket is >= j
        bucket = (prob * bins).floor().clamp(0, bins - 1).long()
        self._add("pos_hist", torch.bincount(bucket[positive], minlength=bins))
        self._add("neg_hist", torch.bincount(bucket[~positive], minlength=bins))

    def compute(self) -> dict[str, float]:
        if "pos_hist" not in self.state:
            return {"odsF": math.nan, "F@0.5": math.nan}
        pos = self.state["pos_hist"]
        neg = self.state["neg_hist"]
        # predictions >= t_j are the buckets j..end
        tp = torch.flip(torch.cumsum(torch.flip(pos, [0]), 0), [0])[1:]
        fp = torch.flip(torch.cumsum(torch.flip(neg, [0]), 0), [0])[1:]
        fn = pos.sum() - tp
        precision = tp / (tp + fp).clamp_min(1)
        recall = tp / (tp + fn).clamp_min(1)
        f = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        return {"odsF": 100.0 * float(f.max()), "F@0.5": 100.0 * float(f[49])}


class Accuracy(Accumulator):
    """Image-level classification: top-1 (and top-5 when there are more than 5 classes), in %."""

    def update(self, correct1: torch.Tensor, correct5: torch.Tensor | None = None) -> None:
        self._add("n", correct1.numel())
        self._add("top1", correct1.sum())
        if correct5 is not None:
            self._add("top5", correct5.sum())

    def compute(self) -> dict[str, float]:
        n = float(self.state.get("n", 0.0))
        out = {"accuracy": 100.0 * float(self.state["top1"]) / n if n else math.nan}
        if "top5" in self.state:
            out["top5"] = 100.0 * float(self.state["top5"]) / n if n else math.nan
        return out

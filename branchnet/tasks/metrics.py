"""Split-level metric accumulators.

Each accumulator sums exact statistics over a whole split (confusion matrices, sums of
errors and their counts, histograms), so a metric is computed once at the end and is
not an average of batch averages. The statistics live in float64 tensors in
``self.state``, which :meth:`Accumulator.all_reduce` sums across processes under
``torch.distributed``: a metric over the split is the same however the split is cut
into batches and ranks (tests/test_metrics.py, tests/test_eval_protocols.py).

The benchmark protocols (docs/training.md, "Evaluation protocols"): segmentation mIoU
over the classes with the dataset's ignore label skipped; depth RMSE, log RMSE, abs-rel
over valid pixels; normals mean/median angle and % within 11.25/22.5/30 degrees;
edges the optimal-dataset-scale F-measure with boundary matching within a distance
tolerance (:class:`BoundaryF`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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
        pred = logits.max(1).indices.flatten()  # argmax(1), the first maximum; 5x faster on NCHW on a CPU
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
    """Dense regression (depth): RMSE, log RMSE, MAE, mean relative error, delta < 1.25 (%).

    Over the pixels where ``valid`` is True (e.g. depth present), in the target's unit:
    ``rmse = sqrt(mean((p - t)^2))``, ``mae = mean|p - t|``; over valid pixels with
    ``t > 0``: ``abs_rel = mean(|p - t| / t)``, ``log_rmse = sqrt(mean((ln p - ln t)^2))``
    with predictions clamped to at least 1e-9 (as the survey's evaluation code does),
    ``delta1`` the % with ``max(p / t, t / p) < 1.25``.
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
        log_err = torch.log(pred[positive].double().clamp_min(1e-9)) - torch.log(target[positive].double())
        self._add("log_sq", (log_err ** 2).sum())

    def compute(self) -> dict[str, float]:
        n = float(self.state.get("n", 0.0))
        n_pos = float(self.state.get("n_pos", 0.0))
        if not n:
            return {"rmse": math.nan, "log_rmse": math.nan, "mae": math.nan, "abs_rel": math.nan,
                    "delta1": math.nan}
        return {
            "rmse": math.sqrt(float(self.state["sq"]) / n),
            "log_rmse": math.sqrt(float(self.state["log_sq"]) / n_pos) if n_pos else math.nan,
            "mae": float(self.state["abs"]) / n,
            "abs_rel": float(self.state["rel"]) / n_pos if n_pos else math.nan,
            "delta1": 100.0 * float(self.state["delta1"]) / n_pos if n_pos else math.nan,
        }


class AngularErrors(Accumulator):
    """Surface normals: angle between predicted and true unit normals, in degrees.

    ``mean``, ``rmse`` and ``median`` angle and the % of pixels within 11.25, 22.5 and
    30 degrees (strictly less than, as the survey's code counts), over valid pixels.

    A median does not add up over batches or ranks, so it comes from a histogram of the
    angles with :attr:`BINS` fixed bins of 0.1 degree on [0, 180] (counts add up
    exactly), linearly interpolated inside the bin that holds the middle pixel: the
    result lies in the same 0.1 degree bin as the exact median of the pooled angles,
    so it is within 0.1 degree of it (tested against ``numpy.median``).
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
    """Binary dense prediction: per-pixel precision/recall/F at 99 fixed thresholds.

    ``odsF`` (%) is the best F over thresholds fixed for the whole split, a pixel
    counting as a hit only where the truth is positive at that very pixel (no
    matching tolerance; :class:`BoundaryF` is the benchmarks' edge measure);
    ``F@0.5`` (%) uses threshold 0.5. ``prefix`` goes before both names (the edges
    task reports them as ``pixel_odsF`` and ``pixel_F@0.5``).
    """

    THRESHOLDS = 99

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix

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
        odsf, f50 = f"{self.prefix}odsF", f"{self.prefix}F@0.5"
        if "pos_hist" not in self.state:
            return {odsf: math.nan, f50: math.nan}
        pos = self.state["pos_hist"]
        neg = self.state["neg_hist"]
        # predictions >= t_j are the buckets j..end
        tp = torch.flip(torch.cumsum(torch.flip(pos, [0]), 0), [0])[1:]
        fp = torch.flip(torch.cumsum(torch.flip(neg, [0]), 0), [0])[1:]
        fn = pos.sum() - tp
        precision = tp / (tp + fp).clamp_min(1)
        recall = tp / (tp + fn).clamp_min(1)
        f = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        return {odsf: 100.0 * float(f.max()), f50: 100.0 * float(f[49])}


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


class Combined(Accumulator):
    """Several accumulators fed together; ``compute`` merges their metrics."""

    def __init__(self, *parts: Accumulator) -> None:
        super().__init__()
        self.parts = parts

    def update(self, *args, **kwargs) -> None:
        for part in self.parts:
            part.update(*args, **kwargs)

    def all_reduce(self) -> None:
        for part in self.parts:
            part.all_reduce()

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in self.parts:
            out.update(part.compute())
        return out


# ---------------------------------------------------------------------------------
# Edges: boundary matching within a distance tolerance


#: Edge thresholds t_j = j / 100, j = 1..99, shared by every image of a split (the
#: survey's evaluation code hands the same 99 values to the seism benchmark).
EDGE_THRESHOLDS = 99


def edge_buckets(prob: torch.Tensor) -> torch.Tensor:
    """Bucket b = floor(100 p) in 0..99: a pixel is predicted at threshold t_j iff b >= j."""
    return (prob.float() * (EDGE_THRESHOLDS + 1)).floor().clamp(0, EDGE_THRESHOLDS).long()


def _at_or_above(hist: torch.Tensor) -> torch.Tensor:
    """(100,) bucket counts -> (99,) counts of buckets >= j for j = 1..99."""
    return torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])[1:]


def tolerance_pixels(max_dist: float, height: int, width: int) -> float:
    """The matching radius in pixels: ``max_dist`` times the image diagonal."""
    return float(max_dist) * math.hypot(height, width)


def _within(dy: int, dx: int, radius: float) -> bool:
    return dy * dy + dx * dx <= radius * radius + 1e-9


def disk_max(maps: torch.Tensor, radius: float) -> torch.Tensor:
    """Max of ``maps`` (N, H, W), values >= 0, over the disk ``dy^2 + dx^2 <= radius^2``.

    Outside the image counts as 0. Computed row by row of the disk: a horizontal
    running max (``max_pool2d`` of width 2w+1) per half-width w, shifted by dy.
    """
    reach = int(math.floor(radius + 1e-9))
    if reach <= 0:
        return maps.clone()
    x = maps[:, None]
    out = maps.clone()
    height = maps.shape[-2]
    rows: dict[int, torch.Tensor] = {}
    for dy in range(-reach, reach + 1):
        w = max(k for k in range(reach + 1) if _within(dy, k, radius)) if _within(dy, 0, radius) else -1
        if w < 0 or abs(dy) >= height:
            continue
        if w not in rows:
            rows[w] = x if w == 0 else F.max_pool2d(x, kernel_size=(1, 2 * w + 1), stride=1, padding=(0, w))
        row = rows[w][:, 0]
        # out[y] = max(out[y], row[y + dy])
        if dy > 0:
            out[:, :-dy] = torch.maximum(out[:, :-dy], row[:, dy:])
        elif dy < 0:
            out[:, -dy:] = torch.maximum(out[:, -dy:], row[:, :dy])
        else:
            out = torch.maximum(out, row)
    return out


def matched_boundary_pixels(pred: np.ndarray, truth: np.ndarray, radius: float) -> int:
    """The size of a maximum one-to-one matching of predicted to true boundary pixels.

    ``pred`` and ``truth`` are (H, W) bool; a predicted and a true pixel may be paired
    when their Euclidean distance is at most ``radius`` pixels, and each pixel is used
    at most once (the benchmarks' ``correspondPixels`` matching; here Hopcroft-Karp,
    ``scipy.sparse.csgraph.maximum_bipartite_matching``). The number of matched true
    pixels equals the number of matched predicted pixels.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching
    from scipy.spatial import cKDTree

    p = np.argwhere(pred)
    t = np.argwhere(truth)
    if not len(p) or not len(t):
        return 0
    neighbours = cKDTree(p).query_ball_point(t, math.sqrt(radius * radius + 1e-9))
    lengths = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=len(t))
    if not lengths.sum():
        return 0
    columns = np.concatenate([np.asarray(n, dtype=np.int32) for n in neighbours if n])
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    graph = csr_matrix((np.ones(len(columns), dtype=np.int8), columns, indptr), shape=(len(t), len(p)))
    match = maximum_bipartite_matching(graph, perm_type="column")
    return int((match >= 0).sum())


class BoundaryF(Accumulator):
    """Edges: the optimal-dataset-scale F-measure with a matching tolerance (``odsF``, %).

    At each of the 99 thresholds t_j = j/100, shared by the whole split, the pixels
    with probability >= t_j (and not ignored) are the predicted boundary. A predicted
    pixel is correct, and a true boundary pixel recalled, when it is matched within
    ``max_dist`` times the image diagonal (the benchmarks' maxDist: 0.0075 for
    PASCAL-Context, 0.011 for NYUD-v2). Over the split, per threshold:
    ``P = sum cntP / sum sumP``, ``R = sum cntR / sum sumR``, ``F = 2PR / (P + R)``;
    ``odsF`` is the largest F, reported with its ``odsP``, ``odsR`` and
    ``ods_threshold``. The counts add up over batches and ranks.

    ``matching`` decides what "matched" means:

    * ``"exact"``: a maximum one-to-one matching of predicted to true pixels within the
      tolerance (:func:`matched_boundary_pixels`), per image and threshold, so
      ``cntP = cntR`` = the matching's size. Exact, slow (CPU, 99 matchings an image).
    * ``"dilation"`` (default, fast, on the device): per image and threshold, the
      matching's size is taken as ``min(a, b)``, ``a`` the predicted pixels that have a
      true pixel within the tolerance, ``b`` the true pixels that have a predicted one
      (two dilations by the tolerance disk, :func:`disk_max`). Any one-to-one matching
      pairs distinct pixels of both kinds, so ``min(a, b)`` is an upper bound of the
      exact size: P and R are never below the exact ones, and equal to them wherever
      the smaller side can all be paired at once (e.g. a thick prediction around a thin
      truth). ``tools/bench_edges.py`` measures the gap (docs/training.md, "Evaluation
      protocols").

    Neither the prediction nor the truth is thinned (the seism benchmark thins the
    binarised prediction first). Where the radius is below one pixel both are the
    per-pixel F of :class:`ThresholdF`.
    """

    def __init__(self, max_dist: float = 0.0075, matching: str = "dilation") -> None:
        super().__init__()
        if matching not in ("dilation", "exact"):
            raise ValueError(f"matching must be 'dilation' or 'exact', got {matching!r}")
        self.max_dist = float(max_dist)
        self.matching = matching

    @torch.no_grad()
    def update(self, prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """``prob`` in [0, 1], ``target`` (1 = boundary) and ``valid`` bool, all (B, [1,] H, W)."""
        height, width = prob.shape[-2:]
        prob = prob.float().reshape(-1, height, width)
        valid = valid.reshape(-1, height, width)
        truth = (target.reshape(-1, height, width) > 0.5) & valid
        radius = tolerance_pixels(self.max_dist, height, width)
        buckets = edge_buckets(prob)
        bins = EDGE_THRESHOLDS + 1
        self._add("sum_p", _at_or_above(torch.bincount(buckets[valid], minlength=bins)))
        self._add("sum_r", truth.sum())
        if self.matching == "dilation":
            near_truth = disk_max(truth.float(), radius) > 0
            reach = disk_max(torch.where(valid, prob, torch.zeros_like(prob)), radius)
            images = torch.arange(prob.shape[0], device=prob.device)[:, None, None].expand_as(buckets)

            def per_image(bucket: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                """(N, 99): per image, the masked pixels whose bucket is >= j."""
                flat = images[mask] * bins + bucket[mask]
                hist = torch.bincount(flat, minlength=prob.shape[0] * bins).reshape(-1, bins)
                return torch.flip(torch.cumsum(torch.flip(hist, [1]), 1), [1])[:, 1:]

            near_p = per_image(buckets, valid & near_truth)   # predicted pixels with a true one near
            near_r = per_image(edge_buckets(reach), truth)    # true pixels with a predicted one near
            matched = torch.minimum(near_p, near_r).sum(0)    # an upper bound on the exact matching
            self._add("cnt_p", matched)
            self._add("cnt_r", matched)
            return
        b = buckets.cpu().numpy()
        v = valid.cpu().numpy()
        t = truth.cpu().numpy()
        matched = np.zeros(EDGE_THRESHOLDS, dtype=np.float64)
        for n in range(b.shape[0]):
            for j in range(1, EDGE_THRESHOLDS + 1):
                matched[j - 1] += matched_boundary_pixels((b[n] >= j) & v[n], t[n], radius)
        self._add("cnt_p", torch.from_numpy(matched))
        self._add("cnt_r", torch.from_numpy(matched))

    def curve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(precision, recall) at the 99 thresholds, each (99,) float64."""
        precision = self.state["cnt_p"] / self.state["sum_p"].clamp_min(1)
        recall = self.state["cnt_r"] / self.state["sum_r"].clamp_min(1)
        return precision, recall

    def compute(self) -> dict[str, float]:
        if "sum_p" not in self.state:
            return {"odsF": math.nan, "odsP": math.nan, "odsR": math.nan, "ods_threshold": math.nan}
        precision, recall = self.curve()
        f = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        best = int(torch.argmax(f))
        return {"odsF": 100.0 * float(f[best]), "odsP": 100.0 * float(precision[best]),
                "odsR": 100.0 * float(recall[best]), "ods_threshold": (best + 1) / 100.0}

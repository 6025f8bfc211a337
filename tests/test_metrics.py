"""Task losses and split-level metrics against direct computations from their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from branchnet.tasks.metrics import AngularErrors, ThresholdF
from branchnet.tasks import TASK_TYPES, Task, TaskSpec, make_task, register_task_type
from branchnet.errors import BadInput


def _in_batches(task: Task, preds, targets, sizes):
    metrics = task.new_metrics()
    start = 0
    for size in sizes:
        metrics.update(preds[start:start + size], targets[start:start + size])
        start += size
    return metrics.compute()


def test_segmentation_miou_over_the_split_not_batch_mean():
    rng = np.random.default_rng(0)
    task = make_task("seg", TaskSpec("segmentation", num_classes=4, ignore_index=255))
    logits = torch.tensor(rng.normal(size=(7, 4, 5, 6)), dtype=torch.float32)
    target = torch.tensor(rng.integers(0, 4, size=(7, 5, 6)))
    target[0, 0, :3] = 255
    result = _in_batches(task, logits, target, [3, 1, 3])
    pred = logits.argmax(1).numpy()
    t = target.numpy()
    valid = t != 255
    ious = []
    for c in range(4):
        inter = np.sum((pred == c) & (t == c) & valid)
        union = np.sum(((pred == c) | (t == c)) & valid)
        if union:
            ious.append(inter / union)
    assert result["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert result["pixel_acc"] == pytest.approx(100 * np.mean(pred[valid] == t[valid]))
    expected_loss = F.cross_entropy(logits, target, ignore_index=255).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_depth_errors_skip_missing_pixels():
    rng = np.random.default_rng(1)
    task = make_task("depth", TaskSpec("depth"))
    target = torch.tensor(rng.uniform(0.5, 5, size=(6, 1, 4, 4)), dtype=torch.float32)
    target[1, 0, 0] = 0.0  # missing
    pred = target + torch.tensor(rng.normal(0, 0.3, size=target.shape), dtype=torch.float32)
    result = _in_batches(task, pred, target, [4, 2])
    valid = target.numpy() > 0
    err = (pred.numpy() - target.numpy())[valid]
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-6)
    assert result["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-6)
    assert result["loss"] == pytest.approx(np.mean(np.abs(err)), rel=1e-5)


def test_normal_angles_in_degrees():
    rng = np.random.default_rng(2)
    task = make_task("normals", TaskSpec("normals"))
    target = F.normalize(torch.tensor(rng.normal(size=(5, 3, 6, 6)), dtype=torch.float32), dim=1)
    pred = target + 0.4 * torch.tensor(rng.normal(size=target.shape), dtype=torch.float32)
    result = _in_batches(task, pred, target, [2, 3])
    p = F.normalize(pred, dim=1).numpy()
    angles = np.degrees(np.arccos(np.clip(np.sum(p * target.numpy(), 1), -1, 1)))
    assert result["mean"] == pytest.approx(angles.mean(), rel=1e-5)
    assert result["median"] == pytest.approx(np.median(angles), abs=0.1)
    assert result["within_11.25"] == pytest.approx(100 * np.mean(angles < 11.25))


def _loss_and_grad(task: Task, pred: torch.Tensor, target: torch.Tensor):
    pred = pred.clone().requires_grad_(True)
    total, count = task.loss_terms(pred, target)
    total.backward()
    return total.item(), count.item(), pred.grad


def test_masked_losses_equal_their_definition_and_missing_pixels_get_no_gradient():
    """The dense losses sum over valid pixels only (written with torch.where, not indexing): the
    sum from the definition, and a zero, finite gradient at a missing or unreadable pixel."""
    rng = np.random.default_rng(7)
    pred = torch.tensor(rng.normal(size=(3, 3, 5, 5)), dtype=torch.float32)

    normals = make_task("normals", TaskSpec("normals"))
    target = F.normalize(torch.tensor(rng.normal(size=(3, 3, 5, 5)), dtype=torch.float32), dim=1)
    target[0, :, 0, 0] = 0.0  # missing: the 0-vector
    target[1, :, 1, 1] = float("nan")  # unreadable
    total, count, grad = _loss_and_grad(normals, pred, target)
    p, t = pred.numpy(), target.numpy()
    with np.errstate(invalid="ignore"):
        valid = np.linalg.norm(t, axis=1) > 0.5
    cos = np.sum(p / np.linalg.norm(p, axis=1, keepdims=True) * np.nan_to_num(t), axis=1)
    assert count == valid.sum() == 3 * 25 - 2
    assert total == pytest.approx(np.sum((1 - cos)[valid]), rel=1e-5)
    assert torch.isfinite(grad).all()
    assert (grad[0, :, 0, 0] == 0).all() and (grad[1, :, 1, 1] == 0).all()

    depth = make_task("depth", TaskSpec("depth"))
    target = torch.tensor(rng.uniform(0.5, 5, size=(3, 1, 5, 5)), dtype=torch.float32)
    target[0, 0, 0, 0], target[2, 0, 3, 3] = 0.0, float("nan")
    total, count, grad = _loss_and_grad(depth, pred[:, :1], target)
    t = target.numpy()
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(t) & (t > 0)
    assert count == valid.sum() == 3 * 25 - 2
    assert total == pytest.approx(np.abs(pred[:, :1].numpy() - t)[valid].sum(), rel=1e-5)
    assert torch.isfinite(grad).all() and grad[0, 0, 0, 0] == 0 and grad[2, 0, 3, 3] == 0

    edges = make_task("edges", TaskSpec("edges"))
    target = torch.tensor(rng.uniform(size=(3, 1, 5, 5)) < 0.3, dtype=torch.float32)
    target[1, 0, 2, 2] = 255.0  # ignored
    total, count, grad = _loss_and_grad(edges, pred[:, :1], target)
    x, y = pred[:, :1].numpy().astype(np.float64), target.numpy()
    valid = y != 255
    w = edges.options["pos_weight"]
    sigma = 1 / (1 + np.exp(-x))
    bce = -np.where(y > 0.5, w * np.log(sigma), (1 - w) * np.log(1 - sigma))
    assert count == valid.sum() == 3 * 25 - 1
    assert total == pytest.approx(bce[valid].sum(), rel=1e-5)
    assert grad[1, 0, 2, 2] == 0


def test_confusion_matrix_takes_the_first_of_tied_classes():
    """argmax's rule (the first maximum) with the faster max(1).indices."""
    task = make_task("seg", TaskSpec("segmentation", num_classes=3))
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 1, 0, 1] = logits[0, 2, 0, 1] = 1.0  # tie between 1 and 2 -> 1
    logits[0, 2, 0, 2] = 1.0
    target = torch.tensor([[[0, 1, 2, 0]]])  # pixel 0 and 3: all tied -> 0
    result = _in_batches(task, logits, target, [1])
    assert result["pixel_acc"] == pytest.approx(100.0)


def test_threshold_f_is_the_best_dataset_wide_threshold():
    rng = np.random.default_rng(3)
    prob = torch.tensor(rng.uniform(size=(4000,)), dtype=torch.float32)
    truth = torch.tensor(rng.uniform(size=4000) < prob.numpy() ** 2, dtype=torch.float32)
    acc = ThresholdF()
    acc.update(prob[:1500], truth[:1500], torch.ones(1500, dtype=torch.bool))
    acc.update(prob[1500:], truth[1500:], torch.ones(2500, dtype=torch.bool))
    best = 0.0
    for j in range(1, 100):
        predicted = prob.numpy() >= j / 100
        tp = np.sum(predicted & (truth.numpy() > 0.5))
        fp = np.sum(predicted & (truth.numpy() < 0.5))
        fn = np.sum(~predicted & (truth.numpy() > 0.5))
        p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        best = max(best, 2 * p * r / (p + r) if p + r else 0.0)
    assert acc.compute()["odsF"] == pytest.approx(100 * best, rel=1e-6)


def test_edge_loss_weights_positives():
    task = make_task("edges", TaskSpec("edges"), options={"pos_weight": 0.9})
    logits = torch.tensor([[0.3, -1.0, 2.0]])
    target = torch.tensor([[1.0, 0.0, 255.0]])
    expected = (0.9 * -np.log(torch.sigmoid(torch.tensor(0.3)).item())
                + 0.1 * -np.log(1 - torch.sigmoid(torch.tensor(-1.0)).item())) / 2
    assert task.loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_classification_and_attribute_accuracy():
    cls = make_task("count", TaskSpec("classification", num_classes=3))
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])
    target = torch.tensor([0, 1, 0, 0])
    assert _in_batches(cls, logits, target, [2, 2])["accuracy"] == pytest.approx(75.0)
    attr = make_task("a", TaskSpec("attribute"))
    result = _in_batches(attr, torch.tensor([[1.0], [-1.0], [0.5]]), torch.tensor([1.0, 1.0, 0.0]), [1, 2])
    assert result["accuracy"] == pytest.approx(100 * 1 / 3)


def test_angular_median_from_histogram():
    acc = AngularErrors()
    target = torch.tensor([[[[0.0]], [[0.0]], [[1.0]]]]).repeat(1, 1, 1, 3)
    angles = np.radians([10.0, 20.0, 50.0])
    pred = torch.tensor(np.stack([np.sin(angles), np.zeros(3), np.cos(angles)])[None, :, None, :], dtype=torch.float32)
    acc.update(pred, target, torch.ones(1, 1, 3, dtype=torch.bool))
    assert acc.compute()["median"] == pytest.approx(20.0, abs=0.1)


def test_a_new_task_type_plugs_in_without_touching_the_trainer():
    @register_task_type
    class Brightness(Task):
        type_name = "brightness_test"
        dense = False
        main_metric = "loss"
        higher_is_better = False
        out_channels = 1

        def loss_terms(self, pred, target):
            return ((pred.reshape(-1) - target) ** 2).sum(), torch.tensor(float(target.numel()))

        def make_accumulator(self):
            from branchnet.tasks.metrics import MeanAccumulator
            return MeanAccumulator("mse")

        def update_metrics(self, acc, pred, target):
            acc.update(((pred.reshape(-1) - target) ** 2).sum(), target.numel())

    try:
        task = make_task("bright", TaskSpec("brightness_test"))
        result = _in_batches(task, torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 0.0]), [1, 1])
        assert result["mse"] == pytest.approx(2.5)
    finally:
        TASK_TYPES.pop("brightness_test")


def test_unknown_task_type_lists_valid_ones():
    with pytest.raises(BadInput, match="unknown task type 'depht'.*did you mean 'depth'.*segmentation"):
        make_task("x", TaskSpec("depth"), type_name="depht")
    with pytest.raises(BadInput, match="unknown option 'weight'"):
        make_task("e", TaskSpec("edges"), options={"weight": 1})

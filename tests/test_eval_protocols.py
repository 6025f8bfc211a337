"""The benchmarks' evaluation protocols, each against a direct computation from its definition.

Edges: tolerant odsF (dilation and exact one-to-one matching) against brute force and a
networkx matching; depth log RMSE / abs-rel; the normals median from its histogram
against numpy; every accumulator summed over pieces (batches, ranks) equals one pass.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from branchnet.errors import BadInput
from branchnet.tasks import TaskSpec, make_task
from branchnet.tasks.metrics import (AngularErrors, BoundaryF, RegressionErrors, ThresholdF, disk_max,
                                     matched_boundary_pixels, tolerance_pixels)


def _brute_disk_max(maps: np.ndarray, radius: float) -> np.ndarray:
    n, h, w = maps.shape
    out = np.zeros_like(maps)
    for y in range(h):
        for x in range(w):
            yy, xx = np.mgrid[0:h, 0:w]
            disk = (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius + 1e-9
            out[:, y, x] = maps[:, disk].max(axis=1)
    return out


@pytest.mark.parametrize("radius", [0.4, 1.0, 1.5, 2.3, 3.2])
def test_disk_max_is_the_max_over_the_euclidean_disk(radius):
    rng = np.random.default_rng(0)
    maps = rng.uniform(size=(2, 9, 11)).astype(np.float32)
    got = disk_max(torch.from_numpy(maps), radius).numpy()
    np.testing.assert_array_equal(got, _brute_disk_max(maps, radius))


def _networkx_matching(pred: np.ndarray, truth: np.ndarray, radius: float) -> int:
    """Direct: the bipartite graph of pixel pairs within the radius, networkx's maximum matching."""
    graph = nx.Graph()
    p = [("p", int(y), int(x)) for y, x in np.argwhere(pred)]
    t = [("t", int(y), int(x)) for y, x in np.argwhere(truth)]
    graph.add_nodes_from(p)
    graph.add_nodes_from(t)
    for a in p:
        for b in t:
            if (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2 <= radius * radius + 1e-9:
                graph.add_edge(a, b)
    matching = nx.bipartite.maximum_matching(graph, top_nodes=p)
    return len(matching) // 2


def test_exact_matching_agrees_with_networkx_on_random_cases():
    rng = np.random.default_rng(1)
    for trial in range(6):
        pred = rng.uniform(size=(8, 9)) < 0.3
        truth = rng.uniform(size=(8, 9)) < 0.2
        radius = [0.0, 1.0, 1.5, 2.0][trial % 4]
        assert matched_boundary_pixels(pred, truth, radius) == _networkx_matching(pred, truth, radius)


def test_a_one_pixel_shift_is_matched_only_within_the_tolerance():
    truth = np.zeros((10, 10), bool)
    truth[2:8, 4] = True            # a vertical boundary of 6 pixels
    pred = np.roll(truth, 1, axis=1)  # predicted one pixel to the right
    assert matched_boundary_pixels(pred, truth, 1.0) == 6
    assert matched_boundary_pixels(pred, truth, 0.9) == 0
    prob = torch.from_numpy(pred.astype(np.float32))[None, None]
    target = torch.from_numpy(truth.astype(np.float32))[None, None]
    valid = torch.ones_like(target, dtype=torch.bool)
    for matching in ("dilation", "exact"):
        # diagonal of 10 x 10 = 14.14 px: 0.0075 -> 0.106 px, 0.08 -> 1.13 px
        near = BoundaryF(0.08, matching)
        near.update(prob, target, valid)
        assert near.compute()["odsF"] == pytest.approx(100.0)
        strict = BoundaryF(0.0075, matching)
        strict.update(prob, target, valid)
        assert strict.compute()["odsF"] == pytest.approx(0.0)


def test_a_thick_prediction_counts_once_per_true_pixel_in_exact_matching():
    # truth: one column of 5 pixels; prediction: that column and both neighbours (15 pixels), r = 1
    truth = np.zeros((7, 7), bool)
    truth[1:6, 3] = True
    pred = np.zeros((7, 7), bool)
    pred[1:6, 2:5] = True
    radius_fraction = 1.0 / math.hypot(7, 7)
    prob = torch.from_numpy(pred.astype(np.float32))[None, None]
    target = torch.from_numpy(truth.astype(np.float32))[None, None]
    valid = torch.ones_like(target, dtype=torch.bool)
    exact, dilation = BoundaryF(radius_fraction, "exact"), BoundaryF(radius_fraction, "dilation")
    exact.update(prob, target, valid)
    dilation.update(prob, target, valid)
    # by hand: exact P = 5 / 15, R = 5 / 5; dilation: 15 predicted pixels near the truth, 5 true
    # pixels near the prediction, min(15, 5) = 5 matched: the same
    for acc in (exact, dilation):
        assert acc.compute()["odsP"] == pytest.approx(100 * 5 / 15)
        assert acc.compute()["odsR"] == pytest.approx(100.0)
        assert acc.compute()["odsF"] == pytest.approx(100 * 2 * (1 / 3) / (1 + 1 / 3))


def test_dilation_is_an_upper_bound_and_can_exceed_the_exact_matching():
    # on one row, r = 1: truth g1 p1 g2 . . . p2 g3 p3  ->  p1 serves g1 or g2, g3 is served by
    # p2 or p3: the exact matching pairs 2; 3 predicted pixels have a true neighbour and 3 true
    # pixels a predicted one, so dilation counts min(3, 3) = 3
    truth = np.zeros((3, 10), bool)
    pred = np.zeros((3, 10), bool)
    truth[1, [0, 2, 7]] = True
    pred[1, [1, 6, 8]] = True
    assert matched_boundary_pixels(pred, truth, 1.0) == 2
    prob = torch.from_numpy(pred.astype(np.float32))[None, None]
    target = torch.from_numpy(truth.astype(np.float32))[None, None]
    valid = torch.ones_like(target, dtype=torch.bool)
    fraction = 1.0 / math.hypot(3, 10)
    exact, dilation = BoundaryF(fraction, "exact"), BoundaryF(fraction, "dilation")
    exact.update(prob, target, valid)
    dilation.update(prob, target, valid)
    assert float(exact.state["cnt_p"][0]) == 2 and float(dilation.state["cnt_p"][0]) == 3
    assert dilation.compute()["odsF"] == pytest.approx(100.0)
    assert exact.compute()["odsF"] == pytest.approx(100 * 2 / 3)


def _random_edge_case(rng, n=3, h=12, w=14):
    truth = np.zeros((n, 1, h, w), np.float32)
    for i in range(n):
        truth[i, 0, rng.integers(1, h - 1), 2:w - 2] = 1.0
        truth[i, 0, 2:h - 2, rng.integers(1, w - 1)] = 1.0
    shifted = np.roll(truth, rng.integers(-1, 2), axis=3)
    prob = np.clip(0.7 * shifted + 0.35 * rng.uniform(size=truth.shape), 0, 1).astype(np.float32)
    truth[0, 0, 0, :4] = 255.0  # ignored pixels
    return torch.from_numpy(prob), torch.from_numpy(truth)


def _direct_ods(prob, target, max_dist, exact):
    """odsF from the definition: per threshold, per image, brute-force counts; best F."""
    prob, target = prob.numpy()[:, 0], target.numpy()[:, 0]
    h, w = prob.shape[1:]
    radius = max_dist * math.hypot(h, w)
    valid = target != 255
    truth = (target > 0.5) & valid
    yy, xx = np.mgrid[0:h, 0:w]
    best = 0.0
    for j in range(1, 100):
        cnt_p = sum_p = cnt_r = sum_r = 0
        for n in range(prob.shape[0]):
            pred = (np.floor(prob[n] * 100) >= j) & valid[n]
            sum_p += pred.sum()
            sum_r += truth[n].sum()
            if exact:
                m = _networkx_matching(pred, truth[n], radius)
                cnt_p += m
                cnt_r += m
                continue
            for y, x in np.argwhere(pred):
                cnt_p += bool(np.any(truth[n] & ((yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2 + 1e-9)))
            for y, x in np.argwhere(truth[n]):
                cnt_r += bool(np.any(pred & ((yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2 + 1e-9)))
        p = cnt_p / max(sum_p, 1)
        r = cnt_r / max(sum_r, 1)
        best = max(best, 2 * p * r / (p + r) if p + r else 0.0)
    return 100 * best


@pytest.mark.parametrize("matching", ["dilation", "exact"])
def test_tolerant_odsf_against_the_definition_over_batches(matching):
    rng = np.random.default_rng(2)
    prob, target = _random_edge_case(rng)
    max_dist = 1.5 / math.hypot(12, 14)  # 1.5 pixels
    task = make_task("edges", TaskSpec("edges"), options={"max_dist": max_dist, "matching": matching})
    logits = torch.logit(prob.clamp(1e-6, 1 - 1e-6))
    metrics = task.new_metrics()
    metrics.update(logits[:1], target[:1])
    metrics.update(logits[1:], target[1:])
    result = metrics.compute()
    assert result["odsF"] == pytest.approx(_direct_ods(torch.sigmoid(logits), target, max_dist, matching == "exact"),
                                           abs=1e-6)
    assert "pixel_odsF" in result and "pixel_F@0.5" in result
    assert task.main_metric == "odsF" and task.higher_is_better


def test_below_one_pixel_the_tolerant_f_is_the_per_pixel_f():
    rng = np.random.default_rng(3)
    prob, target = _random_edge_case(rng)
    valid = target != 255
    boundary, pixel = BoundaryF(0.9 / math.hypot(12, 14)), ThresholdF()
    boundary.update(prob, target, valid)
    pixel.update(prob, target, valid)
    assert boundary.compute()["odsF"] == pytest.approx(pixel.compute()["odsF"], abs=1e-9)


def test_edges_tolerance_defaults_and_bad_options():
    assert make_task("e", TaskSpec("edges")).options["max_dist"] == 0.0075
    assert tolerance_pixels(0.011, 480, 640) == pytest.approx(8.8)
    with pytest.raises(BadInput, match="max_dist.*fraction of the image diagonal"):
        make_task("e", TaskSpec("edges"), options={"max_dist": 2})
    with pytest.raises(BadInput, match="matching.*dilation, exact"):
        make_task("e", TaskSpec("edges"), options={"matching": "hungarian"})


def test_nyud_edges_use_the_nyud_benchmark_tolerance():
    from branchnet.data.nyud import NYUDDataset

    spec = NYUDDataset.available_tasks({})["edges"]
    assert make_task("edges", spec).options["max_dist"] == 0.011


def test_depth_log_rmse_and_abs_rel_over_valid_pixels():
    rng = np.random.default_rng(4)
    target = rng.uniform(0.5, 8, size=(5, 1, 4, 6)).astype(np.float32)
    target[0, 0, 0, :3] = 0.0  # missing
    pred = (target + rng.normal(0, 0.4, size=target.shape)).astype(np.float32)
    pred[1, 0, 0, 0] = -0.2  # a negative prediction is clamped to 1e-9 in log space
    task = make_task("depth", TaskSpec("depth"))
    metrics = task.new_metrics()
    for part in (slice(0, 2), slice(2, 5)):
        metrics.update(torch.from_numpy(pred[part]), torch.from_numpy(target[part]))
    result = metrics.compute()
    valid = target > 0
    p, t = pred[valid].astype(np.float64), target[valid].astype(np.float64)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((p - t) ** 2)), rel=1e-6)
    assert result["log_rmse"] == pytest.approx(np.sqrt(np.mean((np.log(np.maximum(p, 1e-9)) - np.log(t)) ** 2)),
                                               rel=1e-6)
    assert result["abs_rel"] == pytest.approx(np.mean(np.abs(p - t) / t), rel=1e-6)


def test_depth_and_offset_main_metric_options():
    assert make_task("d", TaskSpec("depth")).main_metric == "rmse"
    assert make_task("d", TaskSpec("depth"), options={"main_metric": "mae"}).main_metric == "mae"
    with pytest.raises(BadInput, match="main_metric.*rmse, mae"):
        make_task("d", TaskSpec("depth"), options={"main_metric": "delta1"})
    from branchnet.data.cityscapes import CityscapesDataset

    offered = CityscapesDataset.available_tasks({})
    assert make_task("disparity", offered["disparity"]).main_metric == "mae"
    assert make_task("instance", offered["instance"]).main_metric == "l1"
    assert make_task("depth", offered["depth"]).main_metric == "rmse"


def test_normals_median_within_one_bin_of_numpy_and_exact_over_pieces():
    rng = np.random.default_rng(5)
    target = F.normalize(torch.tensor(rng.normal(size=(6, 3, 7, 9)), dtype=torch.float32), dim=1)
    pred = F.normalize(target + 0.5 * torch.tensor(rng.normal(size=target.shape), dtype=torch.float32), dim=1)
    valid = torch.tensor(rng.uniform(size=(6, 7, 9)) < 0.9)
    whole = AngularErrors()
    whole.update(pred, target, valid)
    pieces = [AngularErrors(), AngularErrors()]
    pieces[0].update(pred[:2], target[:2], valid[:2])
    pieces[1].update(pred[2:], target[2:], valid[2:])
    for key in pieces[0].state:  # what all_reduce does across ranks: add the states
        pieces[0].state[key] = pieces[0].state[key] + pieces[1].state[key]
    assert pieces[0].compute() == pytest.approx(whole.compute(), rel=1e-12)
    cos = (pred * target).sum(1).clamp(-1, 1)[valid].double()
    angles = torch.rad2deg(torch.acos(cos)).numpy()
    result = whole.compute()
    assert abs(result["median"] - np.median(angles)) <= 180.0 / AngularErrors.BINS
    assert result["mean"] == pytest.approx(angles.mean(), rel=1e-9)
    for limit in (11.25, 22.5, 30):
        assert result[f"within_{limit:g}"] == pytest.approx(100 * np.mean(angles < limit))


def test_boundary_and_depth_counts_add_up_over_pieces():
    rng = np.random.default_rng(6)
    prob, target = _random_edge_case(rng, n=4)
    valid = target != 255
    whole, a, b = BoundaryF(0.1), BoundaryF(0.1), BoundaryF(0.1)
    whole.update(prob, target, valid)
    a.update(prob[:3], target[:3], valid[:3])
    b.update(prob[3:], target[3:], valid[3:])
    for key in a.state:
        a.state[key] = a.state[key] + b.state[key]
    assert a.compute() == whole.compute()
    depth = torch.tensor(rng.uniform(1, 3, size=(4, 1, 3, 3)), dtype=torch.float32)
    pred = depth + 0.1
    r_whole, r_a, r_b = RegressionErrors(), RegressionErrors(), RegressionErrors()
    r_whole.update(pred, depth, depth > 0)
    r_a.update(pred[:1], depth[:1], depth[:1] > 0)
    r_b.update(pred[1:], depth[1:], depth[1:] > 0)
    for key in r_a.state:
        r_a.state[key] = r_a.state[key] + r_b.state[key]
    assert r_a.compute() == pytest.approx(r_whole.compute(), rel=1e-12)


def test_taskonomy_main_metrics_are_table_1s():
    from branchnet.data.taskonomy import TaskonomyDataset

    offered = TaskonomyDataset.available_tasks({})
    assert make_task("scene", offered["scene"]).main_metric == "top5"
    assert make_task("depth", offered["depth"]).main_metric == "mae"
    few = make_task("c", TaskSpec("classification", num_classes=3))
    assert few.main_metric == "accuracy"
    with pytest.raises(BadInput, match="top5 needs more than 5 classes"):
        make_task("c", TaskSpec("classification", num_classes=3), options={"main_metric": "top5"})

"""The embedded scenes generator: determinism, caching, and labels that agree with the scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from branchnet.config import DataConfig
from branchnet.data import build_tasks
from branchnet.data.render import camera_basis, project
from branchnet.data.scenes import (ATTRIBUTE_NAMES, COLOURS, MIN_VISIBLE, SHAPES, ScenesDataset, ensure_split,
                                   generate_split, render_scenes, sample_scene, scene_rng)

H = W = 48


@pytest.fixture(scope="module")
def batch():
    return render_scenes(3, "val", range(40), H, W, 5)


@pytest.fixture(scope="module")
def scenes():
    return [sample_scene(scene_rng(3, "val", i), 5) for i in range(40)]


def test_generation_is_deterministic_and_independent_of_chunking(batch):
    again = generate_split(3, "val", 40, H, W, 5, workers=1, chunk=7)
    for key, value in batch.items():
        np.testing.assert_array_equal(value, again[key], err_msg=key)


def test_splits_and_seeds_differ(batch):
    other_split = render_scenes(3, "test", range(5), H, W, 5)
    other_seed = render_scenes(4, "val", range(5), H, W, 5)
    assert not np.array_equal(batch["image"][:5], other_split["image"])
    assert not np.array_equal(batch["image"][:5], other_seed["image"])


def test_parallel_generation_matches_serial(batch):
    parallel = generate_split(3, "val", 40, H, W, 5, workers=2, chunk=10)
    np.testing.assert_array_equal(parallel["image"], batch["image"])
    np.testing.assert_array_equal(parallel["depth"], batch["depth"])


def _camera_rays(scene, height, width):
    """Unit ray directions (H, W, 3) in camera coordinates (x right, y up, z to viewer)."""
    g = scene[0]
    tan = np.tan(float(g["fov"]) / 2)
    xs = (2 * (np.arange(width) + 0.5) / width - 1) * tan * width / height
    ys = (1 - 2 * (np.arange(height) + 0.5) / height) * tan
    d = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], -np.ones((height, width))), -1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_normals_are_unit_and_face_the_camera(batch, scenes):
    normals = batch["normals"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=2e-3)
    for i, scene in enumerate(scenes):
        facing = np.sum(normals[i] * _camera_rays(scene, H, W), -1)
        assert (facing < 1e-3).all(), f"image {i}: a visible normal points away from the camera"


def test_depth_is_positive_and_places_ground_pixels_on_the_ground(batch, scenes):
    assert np.isfinite(batch["depth"]).all() and (batch["depth"] > 0).all()
    for i, (g, _) in enumerate(scenes):
        right, up, forward = camera_basis(g["eye"][None], g["target"][None])
        rays = _camera_rays((g, None), H, W)
        world = rays[..., 0:1] * right[0] + rays[..., 1:2] * up[0] - rays[..., 2:3] * forward[0]
        # depth is the distance along the optical axis: point = eye + depth / cos * ray
        points = g["eye"] + batch["depth"][i][..., None] / (world @ forward[0])[..., None] * world
        ground = batch["surface"][i] == 0
        np.testing.assert_allclose(points[ground][:, 1], 0.0, atol=1e-4)
        wall = batch["surface"][i] == 1
        np.testing.assert_allclose(points[wall][:, 2], 6.5, atol=1e-4)


def _pairs(array):
    yield array[:, :-1], array[:, 1:]
    yield array[:-1], array[1:]


def test_edges_lie_on_label_and_depth_discontinuities(batch):
    for i in range(len(batch["image"])):
        edges = batch["edges"][i].astype(bool)
        for (ea, eb), (sa, sb), (da, db), (ua, ub) in zip(_pairs(edges), _pairs(batch["seg"][i]),
                                                           _pairs(batch["depth"][i]), _pairs(batch["surface"][i])):
            label_change = sa != sb
            assert (ea[label_change] & eb[label_change]).all()
            jump = np.abs(da - db) > 0.3 * np.minimum(da, db)
            planar = (ua == ub) & (ua <= 1)  # foreshortening along the ground or wall is not an edge
            jump &= ~planar
            assert (ea[jump] & eb[jump]).all()
        assert edges.mean() < 0.5


def test_count_and_attributes_agree_with_the_scene(batch, scenes):
    kinds = {v: k for k, v in SHAPES.items()}
    for i, (g, extras) in enumerate(scenes):
        surface = batch["surface"][i]
        visible = [s for s in range(5) if g["present"][s] and (surface == 2 + s).sum() >= MIN_VISIBLE]
        assert batch["count"][i] == len(visible)
        attrs = dict(zip(ATTRIBUTE_NAMES, batch["attributes"][i].astype(bool)))
        for colour in COLOURS:
            for shape in SHAPES:
                expected = any(extras.colour[s] == colour and kinds[int(g["kind"][s])] == shape for s in visible)
                assert attrs[f"{colour}_{shape}"] == expected, (i, colour, shape)
            assert attrs[colour] == any(extras.colour[s] == colour for s in visible)
        cols = np.arange(W) + 0.5
        left = any((cols[None, :] * (surface == 2 + s)).sum() / (surface == 2 + s).sum() < W / 2 for s in visible)
        assert attrs["left"] == left
        assert attrs["many"] == (len(visible) >= 4)
        assert attrs["light_left"] == (g["light"][0] < 0)
        # segmentation classes: background 0 and 1 + shape kind for objects
        expected_seg = np.zeros_like(surface)
        for s in range(5):
            expected_seg[surface == 2 + s] = int(g["kind"][s]) + 1
        np.testing.assert_array_equal(batch["seg"][i], expected_seg)


def test_attributes_are_neither_constant(batch):
    more = render_scenes(5, "train", range(200), 32, 32, 5)
    rate = more["attributes"].mean(0)
    assert (rate > 0.02).all() and (rate < 0.98).all(), dict(zip(ATTRIBUTE_NAMES, rate.round(2)))


def test_keypoint_heatmap_peaks_at_visible_object_centres(batch, scenes):
    for i, (g, _) in enumerate(scenes):
        heat = batch["keypoints"][i].astype(np.float64)
        assert heat.min() >= 0 and heat.max() <= 1.0 + 1e-3
        surface = batch["surface"][i]
        for s in range(5):
            if not g["present"][s] or (surface == 2 + s).sum() < MIN_VISIBLE:
                continue
            col, row, z = project(g["center"][s][None], g["eye"], g["target"], float(g["fov"]), H, W)
            r, c = int(row[0]), int(col[0])
            if z[0] > 0 and 0 <= r < H and 0 <= c < W:
                assert heat[r, c] > 0.5, (i, s)


def test_cache_is_reused_and_atomic(tmp_path):
    first = ensure_split(str(tmp_path), 0, "train", 12, 32, 32, 3, workers=1, quiet=True)
    stamp = (first / "image.npy").stat().st_mtime_ns
    second = ensure_split(str(tmp_path), 0, "train", 12, 32, 32, 3, workers=1, quiet=True)
    assert first == second and (second / "image.npy").stat().st_mtime_ns == stamp
    leftovers = [p.name for p in first.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_dataset_items_follow_the_task_conventions(tmp_path):
    data = DataConfig(root=str(tmp_path), image_size=[32, 32], splits={"val": 6}, options={"max_objects": 3})
    tasks = ["seg", "depth", "normals", "edges", "keypoints", "count", "attr_red", "attr_left"]
    dataset = ScenesDataset(data, "val", tasks, quiet=True)
    image, targets = dataset[2]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert targets["seg"].shape == (32, 32) and targets["seg"].dtype == torch.int64
    assert targets["seg"].max() <= 3
    assert targets["depth"].shape == (1, 32, 32)
    assert targets["normals"].shape == (3, 32, 32)
    assert set(targets["edges"].unique().tolist()) <= {0.0, 1.0}
    assert targets["keypoints"].shape == (1, 32, 32)
    assert targets["count"].dtype == torch.int64 and 0 <= int(targets["count"]) <= 3
    assert float(targets["attr_red"]) in (0.0, 1.0)


def test_config_tasks_bind_to_types():
    from branchnet.config import config_from_dict

    config = config_from_dict({"tasks": ["seg", "depth", "count", {"name": "edges", "options": {"pos_weight": 0.9}},
                                         "attr_blue_box"]})
    tasks = build_tasks(config)
    assert [t.type_name for t in tasks] == ["segmentation", "depth", "classification", "edges", "attribute"]
    assert tasks[0].out_channels == 4 and tasks[2].out_channels == 6
    assert tasks[3].options["pos_weight"] == 0.9

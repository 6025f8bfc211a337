"""Augmentation: each transform and label kind against a case computed by hand, the draws a
function of (seed, epoch, index), augmentation off is today's pipeline bit for bit, and
the one-line errors for values out of range."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from branchnet.config import AugmentConfig, config_from_dict
from branchnet.data import build_dataset
from branchnet.data.augment import PAD_RGB, Draw, LabelRule, apply, draw, footprint_max
from branchnet.data.cityscapes import instance_offsets
from branchnet.errors import BadInput
from conftest import assert_one_line_error


RULES = {"seg": LabelRule("classes", 255.0), "depth": LabelRule("depth"), "disp": LabelRule("disparity"),
         "normals": LabelRule("normals"), "edges": LabelRule("edges", 255.0, 255.0),
         "heat": LabelRule("heatmap"), "inst": LabelRule("offsets"), "count": LabelRule("image")}


def _image(h=8, w=8, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(3, h, w), dtype=np.uint8))


def _run(targets, d, size=(8, 8), image=None):
    rules = {k: RULES[k] for k in targets}
    return apply(image if image is not None else _image(*size), targets, rules, d, size)


def test_flip_mirrors_a_normal_map_of_a_plane_and_negates_x():
    normals = torch.tensor([0.6, 0.0, 0.8]).view(3, 1, 1).repeat(1, 4, 5)
    normals[:, :, 0] = 0.0  # the left column has no normal
    image = _image(4, 5)
    out_image, out = _run({"normals": normals}, Draw(flip=True), (4, 5), image)
    expected = torch.tensor([-0.6, 0.0, 0.8]).view(3, 1, 1).repeat(1, 4, 5)
    expected[:, :, 4] = 0.0  # the missing column is now on the right
    assert torch.equal(out["normals"], expected)
    assert torch.equal(out_image, torch.flip(image, dims=[-1]))


def _car(h, w, rows, cols):
    ids = np.zeros((h, w), np.int64)
    ids[rows[0]:rows[1], cols[0]:cols[1]] = 26001  # a car (labelId 26)
    return ids


def test_scaled_centre_offset_field_points_at_the_scaled_centre():
    ids = _car(8, 8, (1, 5), (2, 7))
    offsets = torch.from_numpy(instance_offsets(ids))
    # x 2: the field of the 2x nearest-upsampled instance map, cropped at (3, 5)
    _, out = _run({"inst": offsets}, Draw(scale=2.0, top=3, left=5))
    big = instance_offsets(np.repeat(np.repeat(ids, 2, 0), 2, 1))[:, 3:11, 5:13]
    np.testing.assert_allclose(out["inst"].numpy(), big, atol=1e-5)
    # x 1.5 (8 -> 12 px): every instance pixel plus its offset is the centre (c + 0.5) * 1.5 - 0.5
    _, out = _run({"inst": offsets}, Draw(scale=1.5, top=2, left=1))
    centre = (np.array([2.5, 4.0]) + 0.5) * 1.5 - 0.5 - np.array([2, 1])  # rows 1..4, cols 2..6
    on = out["inst"][2].numpy() > 0.5
    ys, xs = np.nonzero(on)
    np.testing.assert_allclose(ys + out["inst"][0].numpy()[on], centre[0], atol=1e-5)
    np.testing.assert_allclose(xs + out["inst"][1].numpy()[on], centre[1], atol=1e-5)
    assert on.sum() > 0 and not out["inst"][:2].numpy()[:, ~on].any()


def test_flip_negates_dx_of_the_offsets():
    ids = _car(6, 8, (1, 4), (1, 4))
    offsets = torch.from_numpy(instance_offsets(ids))
    _, out = _run({"inst": offsets}, Draw(flip=True), (6, 8))
    flipped = instance_offsets(ids[:, ::-1].copy())
    np.testing.assert_allclose(out["inst"].numpy(), flipped, atol=1e-6)


def test_padded_crops_carry_the_ignore_and_invalid_values():
    rng = np.random.default_rng(1)
    targets = {
        "seg": torch.from_numpy(rng.integers(0, 5, size=(8, 8))),
        "depth": torch.from_numpy(rng.uniform(1, 4, size=(1, 8, 8)).astype(np.float32)),
        "normals": torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(3, 8, 8)).astype(np.float32)), dim=0),
        "edges": torch.from_numpy((rng.uniform(size=(1, 8, 8)) < 0.3).astype(np.float32)),
        "heat": torch.from_numpy(rng.uniform(size=(1, 8, 8)).astype(np.float32)),
        "inst": torch.from_numpy(instance_offsets(_car(8, 8, (2, 6), (2, 6)))),
        "count": torch.tensor(3),
    }
    # x 0.5: the 4 x 4 image placed at rows 2..5, cols 3..6 of the 8 x 8 canvas
    image, out = _run(targets, Draw(scale=0.5, top=-2, left=-3))
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 3:7] = False
    assert (out["seg"][outside] == 255).all() and (out["seg"][~outside] < 5).all()
    assert (out["depth"][0][outside] == 0).all() and (out["depth"][0][~outside] > 0).all()
    assert (out["normals"][:, outside] == 0).all()
    assert torch.allclose(out["normals"][:, ~outside].norm(dim=0), torch.ones(16))
    assert (out["edges"][0][outside] == 255).all()
    assert (out["heat"][0][outside] == 0).all() and (out["inst"][:, outside] == 0).all()
    assert torch.equal(out["count"], torch.tensor(3))
    assert torch.allclose(image[:, outside], torch.tensor(PAD_RGB).view(3, 1).expand(3, int(outside.sum())))
    # the class map is the nearest-neighbour 4 x 4 sample of the original (rows/cols 1, 3, 5, 7)
    assert torch.equal(out["seg"][2:6, 3:7], targets["seg"][1::2, 1::2])


def test_depth_and_disparity_never_blend_in_missing_pixels():
    depth = torch.tensor([[[1.0, 3.0], [0.0, 5.0]]])  # bottom-left missing
    _, out = _run({"depth": depth, "disp": depth.clone()}, Draw(scale=2.0), (4, 4), _image(2, 2))
    # x 2, centre-aligned: output rows/cols sample source 0, 0.25, 0.75, 1 (clamped). By hand:
    # (0, 0): 1; (0, 1): 0.75*1 + 0.25*3 = 1.5; (1, 0): only the valid tap (weight 0.75) -> 1;
    # (2, 0): valid weight 0.25 < 1/2 -> missing; (3, 3): 5. Depth / 2, disparity x 2.
    d = out["depth"][0]
    assert d[0, 0] == pytest.approx(0.5) and d[0, 1] == pytest.approx(0.75) and d[1, 0] == pytest.approx(0.5)
    assert d[2, 0] == 0 and d[3, 0] == 0 and d[3, 3] == pytest.approx(2.5)
    assert out["disp"][0, 0, 1] == pytest.approx(3.0) and out["disp"][0, 3, 3] == pytest.approx(10.0)
    # (1, 1): taps 1, 3, 0 (missing), 5 with weights .5625, .1875, .1875, .0625 -> valid weight .8125
    assert d[1, 1] == pytest.approx((0.5625 * 1 + 0.1875 * 3 + 0.0625 * 5) / 0.8125 / 2)


def test_thin_edges_and_peaks_survive_downscaling():
    edges = torch.zeros(1, 8, 8)
    edges[0, 2, :] = 1.0        # a one-pixel line on row 2: nearest (rows 1, 3, 5, 7) would lose it
    edges[0, 6, 0:2] = 255.0    # ignored pixels
    heat = torch.zeros(1, 8, 8)
    heat[0, 4, 4] = 1.0
    _, out = _run({"edges": edges, "heat": heat}, Draw(scale=0.5, top=-2, left=-2))
    small = out["edges"][0, 2:6, 2:6]
    assert torch.equal(small[1], torch.ones(4))                 # rows 2-3 -> output row 1
    assert small[3, 0] == 255 and small[3, 1] == 0              # rows 6-7, cols 0-1 -> ignore
    assert out["heat"].max() == 1.0                              # the peak is kept
    up = footprint_max(edges[:, :4, :4], (8, 8))
    assert torch.equal(up[0, 4:6, :], torch.ones(2, 8))         # x 2: the line becomes 2 px wide


def test_class_maps_are_resampled_nearest_with_ids_kept():
    seg = torch.tensor([[0, 1], [2, 255]])
    _, out = _run({"seg": seg}, Draw(scale=2.0), (4, 4), _image(2, 2))
    assert torch.equal(out["seg"], torch.tensor(np.repeat(np.repeat(seg.numpy(), 2, 0), 2, 1)))


def test_jitter_by_hand():
    image = torch.tensor([[[100.0, 200.0]], [[50.0, 60.0]], [[10.0, 250.0]]])
    bright, _ = apply(image, {}, {}, Draw(brightness=1.5), (1, 2))
    assert torch.equal(bright, (image * 1.5).clamp(0, 255))
    grey = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    flat, _ = apply(image, {}, {}, Draw(saturation=0.0), (1, 2))
    assert torch.allclose(flat, grey.expand(3, 1, 2))
    low, _ = apply(image, {}, {}, Draw(contrast=0.5), (1, 2))
    assert torch.allclose(low, ((image - grey.mean()) * 0.5 + grey.mean()).clamp(0, 255))


def test_draws_depend_on_seed_epoch_and_index_only():
    config = AugmentConfig(scale_range=[0.5, 2.0], flip=True, jitter=0.3)
    a = draw(config, (32, 32), 7, 2, 5)
    assert a == draw(config, (32, 32), 7, 2, 5)
    assert a != draw(config, (32, 32), 7, 3, 5) and a != draw(config, (32, 32), 8, 2, 5)
    assert a != draw(config, (32, 32), 7, 2, 6)
    draws = [draw(config, (32, 32), 0, 0, i) for i in range(200)]
    assert 0.5 <= min(d.scale for d in draws) and max(d.scale for d in draws) <= 2.0
    assert 60 < sum(d.flip for d in draws) < 140
    assert all(0.7 <= d.brightness <= 1.3 for d in draws)
    centred = draw(AugmentConfig(scale=[1.5], crop=False), (32, 32), 0, 0, 0)
    assert (centred.top, centred.left) == (8, 8)  # 48 - 32 = 16 px, half before


def _scenes(data_cache, augment, split="train", tasks=("seg", "depth", "normals", "edges", "keypoints")):
    config = config_from_dict({
        "seed": 3,
        "data": {"dataset": "scenes", "root": str(data_cache), "image_size": [32, 32],
                 "splits": {"train": 48, "val": 16, "test": 16, "affinity": 12}, "options": {"max_objects": 3},
                 "augment": augment},
        "tasks": list(tasks)})
    return build_dataset(config, split)


def _same(a, b):
    return torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


@pytest.mark.parametrize("augment", [None, {}, {"scale": [1.0]}, {"scale_range": [1.0, 1.0], "crop": False}])
def test_augmentation_off_is_todays_pipeline_bit_for_bit(data_cache, augment):
    ds = _scenes(data_cache, augment)
    assert ds.augmenter is None
    for index in (0, 5):
        image, targets = ds.load(index)
        assert _same(ds[index], (ds.normalize(image), targets))


def test_only_the_training_split_is_augmented_and_epochs_redraw(data_cache):
    augment = {"scale_range": [0.8, 1.5], "flip": True, "jitter": 0.2}
    train = _scenes(data_cache, augment)
    val = _scenes(data_cache, augment, "val")
    assert train.augmenter is not None and val.augmenter is None
    image, targets = val.load(0)
    assert _same(val[0], (val.normalize(image), targets))
    first = [train[i] for i in (3, 1, 2)]
    again = [train[i] for i in (1, 2, 3)]
    assert _same(first[0], again[2]) and _same(first[1], again[0])  # the order items are read is irrelevant
    assert train[0][0].shape == (3, 32, 32) and train[0][1]["seg"].shape == (32, 32)
    train.set_epoch(1)
    assert not _same(train[3], first[0])
    train.set_epoch(0)
    assert _same(train[3], first[0])  # resumable: epoch 0 again draws the same


def test_make_loader_sets_the_epoch_of_the_training_set(data_cache):
    from branchnet.train.engine import make_loader

    ds = _scenes(data_cache, {"flip": True})
    make_loader(ds, 8, 0, train=True, seed=11, epoch=4)
    assert (ds.seed, ds.epoch) == (11, 4)


def test_labels_a_transform_would_falsify_are_refused(data_cache):
    with pytest.raises(BadInput, match="geometry would change the labels of scenes task.*count"):
        _scenes(data_cache, {"scale": [1.0, 1.5]}, tasks=("seg", "count"))
    with pytest.raises(BadInput, match="flip would change the labels.*attr_left.*flip: false"):
        _scenes(data_cache, {"flip": True}, tasks=("seg", "attr_left"))
    assert _scenes(data_cache, {"flip": True}, tasks=("seg", "count")).augmenter is not None


@pytest.mark.parametrize("augment, message", [
    ({"scale": [1.0, 0.0]}, r"'data.augment.scale' must list factors > 0"),
    ({"scale": [1.0], "scale_range": [1, 2]}, r"sets both scale and scale_range"),
    ({"scale_range": [2.0, 1.0]}, r"scale_range' must be \[low, high\] with 0 < low <= high"),
    ({"jitter": 1.5}, r"'data.augment.jitter' must lie in \[0, 1\]"),
    ({"scale_range": [0.5, 1.0], "pad": False}, r"scale 0.5 shrinks the 32x32 input to 16x16, smaller than the "
                                                r"32x32 crop, and pad is false"),
    ({"flipp": True}, r"unknown key 'data.augment.flipp' \(did you mean 'flip'\?\)"),
])
def test_out_of_range_values_are_refused(augment, message):
    with pytest.raises(BadInput, match=message):
        config_from_dict({"data": {"image_size": [32, 32], "augment": augment}, "tasks": ["seg"]})


def test_the_cli_reports_bad_augmentation_in_one_line(cli, tiny_config, tmp_path):
    config = tiny_config(("seg",), **{"splits: {train": "augment: {jitter: -0.1}\n  splits: {train"})
    result = cli("train-single", "--config", config, "--runs", tmp_path / "runs")
    assert_one_line_error(result, "data.augment.jitter", "[0, 1]")

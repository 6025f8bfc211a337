"""NYUD-v2 reader on a tiny tree in the survey's NYUD_MT layout (jpg, png, npy, gt_sets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from branchnet.config import DataConfig
from branchnet.data.nyud import NYUDDataset
from branchnet.errors import BadInput
from conftest import assert_one_line_error

H, W = 24, 32
TRAIN = [f"{i:04d}" for i in (3, 4, 7, 9, 12, 15, 20, 21)]
VAL = [f"{i:04d}" for i in (1, 2, 5)]
TASKS = ["seg", "depth", "normals", "edges"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_nyud(tmp_path_factory.mktemp("nyud"))


def write_nyud(root):
    """A tiny NYUD_MT tree under ``root``; returns (root, arrays by id)."""
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir()
    rng = np.random.default_rng(1)
    arrays = {}
    for item in TRAIN + VAL:
        rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        seg = rng.integers(0, 41, size=(H, W)).astype(np.uint8)
        depth = rng.uniform(0.5, 9.0, size=(H, W)).astype(np.float32)
        depth[:2, :3] = 0
        normals = rng.normal(size=(H, W, 3)).astype(np.float32)
        normals /= np.linalg.norm(normals, axis=2, keepdims=True)
        normals[5, :] = 0
        edge = (rng.random((H, W)) < 0.2).astype(np.float32)
        Image.fromarray(rgb).save(root / "images" / f"{item}.jpg", quality=95)
        Image.fromarray(seg).save(root / "segmentation" / f"{item}.png")
        np.save(root / "depth" / f"{item}.npy", depth)
        np.save(root / "normals" / f"{item}.npy", normals)
        np.save(root / "edge" / f"{item}.npy", edge)
        arrays[item] = {"seg": seg, "depth": depth, "normals": normals, "edge": edge}
    (root / "gt_sets" / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "gt_sets" / "val.txt").write_text("\n".join(VAL) + "\n")
    return root, arrays


def dataset(root, split="train", tasks=TASKS, size=(H, W), **options):
    options.setdefault("affinity_holdout", 2)
    splits = options.pop("splits", {})
    data = DataConfig(dataset="nyud", root=str(root), image_size=list(size), splits=splits, options=options)
    return NYUDDataset(data, split, list(tasks))


def test_targets_follow_the_conventions(tree):
    root, arrays = tree
    ds = dataset(root, "val")
    for index, item in enumerate(ds.ids):
        image, targets = ds[index]
        assert image.dtype == torch.float32 and image.shape == (3, H, W)
        a = arrays[item]
        seg = targets["seg"]
        assert seg.dtype == torch.int64 and seg.shape == (H, W)
        np.testing.assert_array_equal(seg.numpy(), np.where(a["seg"] == 0, 255, a["seg"].astype(np.int64) - 1))
        assert seg[seg != 255].max() <= 39
        np.testing.assert_array_equal(targets["depth"][0].numpy(), a["depth"])
        assert (targets["depth"][0, :2, :3] == 0).all()
        normals = targets["normals"]
        assert normals.shape == (3, H, W)
        norm = normals.norm(dim=0)
        assert torch.allclose(norm[norm > 0], torch.ones(()), atol=1e-5) and (norm[5] == 0).all()
        assert set(targets["edges"].unique().tolist()) <= {0.0, 1.0}
        np.testing.assert_array_equal(targets["edges"][0].numpy(), a["edge"])


def test_resizing_keeps_labels_exact_and_normals_unit(tree):
    root, arrays = tree
    ds = dataset(root, "val", size=(H // 2, W // 2))
    image, targets = ds.load(0)
    a = arrays[ds.ids[0]]
    assert image.shape == (3, H // 2, W // 2) and image.dtype == torch.uint8
    np.testing.assert_array_equal(targets["depth"][0].numpy(), a["depth"][1::2, 1::2])
    np.testing.assert_allclose(targets["normals"].permute(1, 2, 0).numpy(), a["normals"][1::2, 1::2], atol=1e-6)
    assert set(targets["seg"].unique().tolist()) <= set(range(40)) | {255}


def test_splits_are_the_795_654_protocol_with_affinity_held_out(tree):
    root, _ = tree
    ids = {split: dataset(root, split, ["seg"]).ids for split in ("train", "val", "test", "affinity")}
    assert sorted(ids["train"] + ids["affinity"]) == sorted(TRAIN)
    assert len(ids["affinity"]) == 2 and not set(ids["train"]) & set(ids["affinity"])
    assert ids["val"] == ids["test"] and sorted(ids["val"]) == sorted(VAL)
    assert dataset(root, "val", ["seg"], splits={"val": 2}).ids == ids["val"][:2]
    with pytest.raises(BadInput, match="hold out fewer"):
        dataset(root, "train", affinity_holdout=8)


def test_partial_root_names_the_first_missing_file(tree, tmp_path):
    import shutil

    source, _ = tree
    root = tmp_path / "nyud"
    shutil.copytree(source, root)
    (root / "normals" / f"{VAL[1]}.npy").unlink()
    with pytest.raises(BadInput, match=f"missing {root / 'normals' / VAL[1]}.npy"):
        dataset(root, "val")
    assert len(dataset(root, "val", ["seg", "depth"])) == 3
    shutil.rmtree(root / "gt_sets")
    with pytest.raises(BadInput, match=f"missing {root / 'gt_sets' / 'val.txt'}"):
        dataset(root, "val")


def test_cli_reports_a_missing_root_in_one_line(cli, tmp_path):
    config = tmp_path / "nyud.yaml"
    config.write_text(f"data: {{dataset: nyud, root: {tmp_path / 'nowhere'}, image_size: [32, 32]}}\n"
                      "tasks: [seg]\nmodel: {backbone: resnet18, width: 0.125}\ntrain: {device: cpu}\n")
    result = cli("train-single", "--config", config, "--runs", tmp_path / "runs")
    assert_one_line_error(result, str(tmp_path / "nowhere"), "gt_sets/")

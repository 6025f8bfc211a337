"""Cityscapes reader on a tiny tree in the published layout (PNG, uint16 PNG, camera json)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from branchnet.config import DataConfig
from branchnet.data.cityscapes import CityscapesDataset, TRAIN_IDS
from branchnet.errors import BadInput
from branchnet.tasks.extra import InstanceOffset
from branchnet.tasks import TaskSpec
from conftest import assert_one_line_error

H, W = 32, 64
CITIES = {"train": {"aachen": 4, "bochum": 3}, "val": {"frankfurt": 3}}
BASELINE, FX = 0.21, 2000.0
TASKS = ["seg", "instance", "depth", "disparity"]


def _name(city, k):
    return f"{city}_{k:06d}_{19 + k:06d}"


def make_item(rng, root, split, city, k):
    """Write one image with its four label files; returns the arrays written."""
    name = _name(city, k)
    paths = {folder: root / folder / split / city for folder in ("leftImg8bit", "gtFine", "disparity", "camera")}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    label_ids = rng.choice([0, 1, 7, 8, 11, 21, 23, 24, 26, 29, 33], size=(H, W)).astype(np.uint8)
    instances = label_ids.astype(np.uint16).copy()
    # two cars, a caravan (no trainId: not an instance here), a person
    instances[2:10, 3:20] = 26000
    instances[12:30, 30:41] = 26001
    instances[20:24, 2:9] = 29000
    instances[0:5, 50:60] = 24003
    label_ids[instances >= 1000] = (instances[instances >= 1000] // 1000).astype(np.uint8)
    disparity = rng.integers(0, 20000, size=(H, W)).astype(np.uint16)
    disparity[0, :5] = 0
    Image.fromarray(rgb).save(paths["leftImg8bit"] / f"{name}_leftImg8bit.png")
    Image.fromarray(label_ids).save(paths["gtFine"] / f"{name}_gtFine_labelIds.png")
    Image.fromarray(instances).save(paths["gtFine"] / f"{name}_gtFine_instanceIds.png")
    Image.fromarray(disparity).save(paths["disparity"] / f"{name}_disparity.png")
    camera = {"extrinsic": {"baseline": BASELINE, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.02,
                            "z": 1.2},
              "intrinsic": {"fx": FX, "fy": 2265.3, "u0": 1096.98, "v0": 513.137}}
    (paths["camera"] / f"{name}_camera.json").write_text(json.dumps(camera, indent=4))
    return {"rgb": rgb, "labels": label_ids, "instances": instances, "disparity": disparity}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, cities in CITIES.items():
        for city, count in cities.items():
            for k in range(count):
                arrays[_name(city, k)] = make_item(rng, root, split, city, k)
    return root, arrays


def dataset(root, split="train", tasks=TASKS, size=(H, W), **options):
    splits = options.pop("splits", {})
    options.setdefault("affinity_holdout", 2)
    data = DataConfig(dataset="cityscapes", root=str(root), image_size=list(size), splits=splits, options=options)
    return CityscapesDataset(data, split, list(tasks))


def test_labels_at_full_size_follow_the_definitions(tree):
    root, arrays = tree
    ds = dataset(root, "val")
    assert len(ds) == 3
    for index, (name, _, _) in enumerate(ds.items):
        a = arrays[name]
        image, targets = ds.load(index)
        assert image.dtype == torch.uint8 and image.shape == (3, H, W)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), a["rgb"])
        seg = targets["seg"]
        assert seg.dtype == torch.int64 and seg.shape == (H, W)
        expected = np.full((H, W), 255)
        for label, train in TRAIN_IDS.items():
            expected[a["labels"] == label] = train
        np.testing.assert_array_equal(seg.numpy(), expected)
        assert set(seg.unique().tolist()) <= set(range(19)) | {255} and (seg == 255).any()
        # disparity and depth: p = 0 missing, else (p - 1) / 256 pixels, depth = baseline * fx / d
        p = a["disparity"].astype(np.float64)
        d = np.where(p > 0, (p - 1) / 256, 0)
        np.testing.assert_allclose(targets["disparity"][0].numpy(), d, rtol=1e-6)
        depth = np.where(d > 0, BASELINE * FX / np.where(d > 0, d, 1), 0)
        np.testing.assert_allclose(targets["depth"][0].numpy(), depth, rtol=1e-5)
        assert targets["depth"].shape == (1, H, W) and targets["depth"].dtype == torch.float32
        assert (targets["depth"][0, 0, :5] == 0).all()


def test_instance_offsets_point_to_the_instance_centres(tree):
    root, arrays = tree
    ds = dataset(root, "val", ["instance"])
    name = ds.items[0][0]
    target = ds.load(0)[1]["instance"].numpy()
    assert target.shape == (3, H, W) and target.dtype == np.float32
    ids = arrays[name]["instances"]
    on = target[2] > 0.5
    # instances of classes with a trainId (car 26, person 24) count; the caravan (29) and stuff do not
    np.testing.assert_array_equal(on, (ids >= 1000) & (ids // 1000 != 29))
    rows, cols = np.mgrid[0:H, 0:W]
    for instance in (26000, 26001, 24003):
        mask = ids == instance
        centre = rows[mask].mean(), cols[mask].mean()
        np.testing.assert_allclose(target[0][mask], centre[0] - rows[mask], atol=1e-5)
        np.testing.assert_allclose(target[1][mask], centre[1] - cols[mask], atol=1e-5)
    assert (target[:, ~on] == 0).all()


def test_resizing_is_nearest_for_labels_and_rescales_disparity(tree):
    root, arrays = tree
    full = dataset(root, "val")
    half = dataset(root, "val", size=(H // 2, W // 2))
    image, targets = half.load(1)
    ref = full.load(1)[1]
    assert image.shape == (3, H // 2, W // 2)
    # centre-aligned nearest neighbour of a factor 2 takes the odd rows and columns
    np.testing.assert_array_equal(targets["seg"].numpy(), ref["seg"].numpy()[1::2, 1::2])
    np.testing.assert_allclose(targets["depth"].numpy(), ref["depth"].numpy()[:, 1::2, 1::2])
    np.testing.assert_allclose(targets["disparity"].numpy(), ref["disparity"].numpy()[:, 1::2, 1::2] / 2)
    # offsets are measured in pixels of the resized input: centres of the subsampled instance map
    ids = arrays[half.items[1][0]]["instances"][1::2, 1::2]
    mask = ids == 26001
    rows, cols = np.mgrid[0:H // 2, 0:W // 2]
    np.testing.assert_allclose(targets["instance"][0].numpy()[mask], rows[mask].mean() - rows[mask], atol=1e-5)


def test_splits_hold_out_the_affinity_images_from_train(tree):
    root, _ = tree
    names = {split: [item[0] for item in dataset(root, split, ["seg"]).items]
             for split in ("train", "val", "test", "affinity")}
    official_train = {_name(c, k) for c, n in CITIES["train"].items() for k in range(n)}
    assert len(names["affinity"]) == 2 and len(names["train"]) == 5
    assert set(names["train"]) | set(names["affinity"]) == official_train
    assert not set(names["train"]) & set(names["affinity"])
    assert names["val"] == names["test"] and len(names["val"]) == 3
    # deterministic, and a cap keeps the first images of the same order
    capped = dataset(root, "train", ["seg"], splits={"train": 3}).items
    assert [item[0] for item in capped] == names["train"][:3]
    assert [item[0] for item in dataset(root, "affinity", ["seg"], affinity_holdout=3).items][:2] == names["affinity"]


def test_instance_task_loss_and_metric():
    task = InstanceOffset("instance", TaskSpec("instance_offset"))
    target = torch.zeros(1, 3, 2, 2)
    target[0, :2, 0, 0] = torch.tensor([3.0, 4.0])
    target[0, 2, 0, 0] = 1.0
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, :, 1, 1] = 100.0  # off-instance pixels do not count
    assert task.loss(pred, target).item() == pytest.approx(3.5)
    metrics = task.new_metrics()
    metrics.update(pred, target)
    assert metrics.compute()["mean_error"] == pytest.approx(5.0)


def test_bad_options_and_missing_files(tree, tmp_path):
    root, _ = tree
    with pytest.raises(BadInput, match="did you mean 'affinity_holdout'"):
        dataset(root, "train", affinity_holdot=3)
    with pytest.raises(BadInput, match="data.root is not set"):
        CityscapesDataset(DataConfig(dataset="cityscapes"), "train", ["seg"])
    with pytest.raises(BadInput, match=f"missing {tmp_path / 'leftImg8bit' / 'train'}"):
        dataset(tmp_path, "train")
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(root / "leftImg8bit", partial / "leftImg8bit")
    shutil.copytree(root / "gtFine", partial / "gtFine")
    assert len(dataset(partial, "val", ["seg", "instance"])) == 3
    with pytest.raises(BadInput, match=f"missing {partial / 'disparity' / 'val'};"):
        dataset(partial, "val", ["seg", "depth"])


CONFIG = """\
name: city
data:
  dataset: cityscapes
  root: {root}
  image_size: [32, 32]
  options: {{affinity_holdout: 1}}
tasks: [{tasks}]
model: {{backbone: resnet18, width: 0.125, output_stride: 8, head_channels: 8}}
train: {{epochs: 1, batch_size: 2, lr: 0.01, device: cpu}}
"""


def test_missing_disparity_fails_in_one_line_naming_it(cli, tree, tmp_path):
    import shutil

    source, _ = tree
    root = tmp_path / "cs"
    shutil.copytree(source, root)
    gone = sorted((root / "disparity" / "val" / "frankfurt").iterdir())[0]
    gone.unlink()
    config = tmp_path / "city.yaml"
    config.write_text(CONFIG.format(root=root, tasks="seg, depth"))
    result = cli("train-single", "--config", config, "--runs", tmp_path / "runs", "--task", "depth")
    assert_one_line_error(result, str(gone), "leftImg8bit/")
    # a task that does not need the disparity maps still trains
    result = cli("train-single", "--config", config, "--runs", tmp_path / "runs", "--task", "seg")
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "runs" / "single" / "seg" / "metrics.json").read_text())
    assert 0 <= metrics["test"]["seg"]["mIoU"] <= 100

"""Taskonomy reader on tiny trees in the published arrangements (PNG 8/16-bit, npy, split csv)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from branchnet.config import DataConfig
from branchnet.data.taskonomy import TaskonomyDataset
from branchnet.errors import BadInput

S = 32
BUILDINGS = {"train": ["allensville", "beechwood", "benevolence"], "val": ["collierville"], "test": ["corozal"]}
VIEWS = {"allensville": 4, "beechwood": 3, "benevolence": 3, "collierville": 3, "corozal": 2}
DOMAINS = {"rgb": "rgb", "seg": "segment_semantic", "depth": "depth_zbuffer", "normals": "normal",
           "keypoints": "keypoints2d", "edges": "edge_occlusion", "scene": "class_scene"}
TASKS = ["seg", "depth", "normals", "keypoints", "edges", "scene"]


def folder(root, arrangement, domain, building):
    if arrangement == "domain":
        return root / domain / building
    if arrangement == "omnidata":
        return root / domain / "taskonomy" / building
    return root / building / domain


def encode_normals(vectors):
    """Unit vectors -> 127-centred 8-bit RGB, as Taskonomy stores them."""
    unit = vectors / np.linalg.norm(vectors, axis=2, keepdims=True)
    return np.clip(np.round((unit + 1) * 127.5), 0, 255).astype(np.uint8)


def write_taskonomy(root, arrangement="domain", seed=5):
    rng = np.random.default_rng(seed)
    truth = {}
    for building, views in VIEWS.items():
        for domain in DOMAINS.values():
            folder(root, arrangement, domain, building).mkdir(parents=True)
        for v in range(views):
            image_id = f"point_{10 + v}_view_{v % 2}"
            a = {
                "rgb": rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8),
                "seg": rng.integers(0, 18, size=(S, S)).astype(np.uint8),
                "depth": rng.integers(200, 9000, size=(S, S)).astype(np.uint16),
                "normals": encode_normals(rng.normal(size=(S, S, 3))),
                "keypoints": rng.integers(0, 3000, size=(S, S)).astype(np.uint16),
                "edges": rng.integers(0, 5000, size=(S, S)).astype(np.uint16),
                "scene": rng.random(365).astype(np.float32),
            }
            a["depth"][0, :4] = 65535
            a["normals"][3, :] = 128
            for task, domain in DOMAINS.items():
                token = "segmentsemantic" if task == "seg" else domain
                path = folder(root, arrangement, domain, building) / f"{image_id}_domain_{token}"
                if task == "scene":
                    np.save(f"{path}.npy", a[task])
                else:
                    Image.fromarray(a[task]).save(f"{path}.png")
            truth[f"{building}/{image_id}"] = a
    rows = ["id,train,val,test"] + [f"{b},{int(s == 'train')},{int(s == 'val')},{int(s == 'test')}"
                                    for s, names in BUILDINGS.items() for b in names]
    rows.append("notdownloaded,0,0,0")
    (root / "splits_taskonomy").mkdir()
    (root / "splits_taskonomy" / "train_val_test_tiny.csv").write_text("\n".join(rows) + "\n")
    return truth


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("taskonomy")
    return root, write_taskonomy(root)


def dataset(root, split="train", tasks=TASKS, size=(S, S), **options):
    options.setdefault("affinity_holdout", 3)
    splits = options.pop("splits", {})
    data = DataConfig(dataset="taskonomy", root=str(root), image_size=list(size), splits=splits, options=options)
    return TaskonomyDataset(data, split, list(tasks))


def test_targets_decode_the_published_encodings(tree):
    root, truth = tree
    ds = dataset(root, "val")
    assert len(ds) == 3
    for index, item in enumerate(ds.items):
        a = truth[item]
        image, t = ds.load(index)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), a["rgb"])
        seg = a["seg"].astype(np.int64)
        np.testing.assert_array_equal(t["seg"].numpy(), np.where(seg == 0, 255, seg - 1))
        assert t["seg"].dtype == torch.int64 and t["seg"][t["seg"] != 255].max() <= 16
        depth = np.where(a["depth"] == 65535, 0, a["depth"] / 512.0)
        np.testing.assert_allclose(t["depth"][0].numpy(), depth, rtol=1e-6)
        n = a["normals"] / 127.5 - 1
        n = n / np.linalg.norm(n, axis=2, keepdims=True)
        n[3, :] = 0  # grey = no surface = missing
        np.testing.assert_allclose(t["normals"].permute(1, 2, 0).numpy(), n, atol=1e-5)
        np.testing.assert_allclose(t["keypoints"][0].numpy(), a["keypoints"] / 65535.0, rtol=1e-6)
        np.testing.assert_allclose(t["edges"][0].numpy(), a["edges"] / 65535.0, rtol=1e-6)
        assert 0 <= t["edges"].min() and t["edges"].max() <= 1
        assert t["scene"].dtype == torch.int64 and int(t["scene"]) == int(np.argmax(a["scene"]))


def test_resizing_and_task_types(tree):
    root, truth = tree
    ds = dataset(root, "test", size=(S // 4, S // 4))
    image, t = ds.load(1)
    a = truth[ds.items[1]]
    assert image.shape == (3, 8, 8)
    np.testing.assert_allclose(t["depth"][0].numpy(), a["depth"][2::4, 2::4] / 512.0, rtol=1e-6)
    assert set(t["seg"].unique().tolist()) <= set(range(17)) | {255}
    specs = TaskonomyDataset.available_tasks({})
    assert {k: v.type for k, v in specs.items()} == {"seg": "segmentation", "depth": "depth", "normals": "normals",
                                                     "keypoints": "keypoints", "edges": "edge_map",
                                                     "scene": "classification"}
    assert specs["scene"].num_classes == 365 and specs["seg"].num_classes == 17


def test_splits_are_the_buildings_of_the_split_file(tree):
    root, _ = tree
    items = {split: dataset(root, split, ["depth"]).items for split in ("train", "val", "test", "affinity")}
    assert len(items["train"]) + len(items["affinity"]) == sum(VIEWS[b] for b in BUILDINGS["train"])
    assert len(items["affinity"]) == 3 and not set(items["train"]) & set(items["affinity"])
    assert {i.split("/")[0] for i in items["val"]} == {"collierville"}
    assert {i.split("/")[0] for i in items["test"]} == {"corozal"}
    assert dataset(root, "train", ["depth"], splits={"train": 2}).items == items["train"][:2]


@pytest.mark.parametrize("arrangement", ["building", "omnidata"])
def test_other_arrangements_give_the_same_items(tmp_path, tree, arrangement):
    root, truth = tree
    other = tmp_path / arrangement
    other.mkdir()
    assert write_taskonomy(other, arrangement).keys() == truth.keys()
    a, b = dataset(root, "train"), dataset(other, "train")
    assert a.items == b.items
    np.testing.assert_array_equal(a.load(0)[1]["depth"], b.load(0)[1]["depth"])


def test_missing_labels_are_named_or_skipped(tmp_path):
    write_taskonomy(tmp_path)
    gone = tmp_path / "keypoints2d" / "corozal" / "point_10_view_0_domain_keypoints2d.png"
    gone.unlink()
    with pytest.raises(BadInput, match=f"missing {gone}.*skip_incomplete"):
        dataset(tmp_path, "test")
    assert len(dataset(tmp_path, "test", ["depth"])) == 2  # other tasks need not that file
    # skipping drops the image for every task, so all tasks see the same images
    assert dataset(tmp_path, "test", ["depth"], skip_incomplete=True).items == ["corozal/point_11_view_1"]
    import shutil

    shutil.rmtree(tmp_path / "normal" / "corozal")
    with pytest.raises(BadInput, match=f"missing {tmp_path / 'normal' / 'corozal'}"):
        dataset(tmp_path, "test", ["normals"])
    (tmp_path / "splits_taskonomy" / "train_val_test_tiny.csv").unlink()
    with pytest.raises(BadInput, match=f"missing {tmp_path / 'train_val_test_tiny.csv'}"):
        dataset(tmp_path, "test")


def test_bad_options(tree):
    root, _ = tree
    with pytest.raises(BadInput, match="did you mean 'tiny'"):
        dataset(root, partition="tinny")
    with pytest.raises(BadInput, match="scene_classes"):
        TaskonomyDataset.available_tasks({"scene_classes": 1})
    with pytest.raises(BadInput, match="holds 365 scene scores, expected 63"):
        dataset(root, "val", ["scene"], scene_classes=63).load(0)

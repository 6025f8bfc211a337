"""``celeba``: CelebA (Liu et al., ICCV 2015), aligned-and-cropped images and 40 attributes.

Layout under ``data.root`` (the official release; torchvision's ``celeba/`` folder has
the same files)::

    img_align_celeba/000001.jpg ... 202599.jpg     178 x 218 RGB
    list_attr_celeba.txt     line 1: image count; line 2: the 40 attribute names;
                             then "<file> v1 ... v40" with v = 1 or -1
    list_eval_partition.txt  "<file> p" with p = 0 train, 1 val, 2 test

The Google Drive folders (``Img/img_align_celeba/``, ``Anno/list_attr_celeba.txt``,
``Eval/list_eval_partition.txt``) are found too.

Tasks:

* one ``attribute`` task per attribute, named as in the file (``5_o_Clock_Shadow``,
  ``Arched_Eyebrows``, ... ``Young``): target 1.0 where the value is 1, else 0.0; the
  survey's and the branched-networks paper's 40 binary tasks (accuracy);
* the 8 attribute groups of Maximum Roaming (its Table 4) as ``attribute_group`` tasks
  ``global``, ``eyes``, ``hair``, ``mouth``, ``nose``, ``beard``, ``cheeks`` and
  ``wearings``: target the group's attributes in the order of :data:`GROUPS`. List
  either the attributes or the groups under ``tasks`` in a config.

Splits: the official partition (162,770 / 19,867 / 19,962); ``affinity`` is the
``affinity_holdout`` (default 500) training images first in SHA-1 order of their file
names, removed from ``train`` (see :mod:`branchnet.data.ondisk`).
Options (``data.options``): ``affinity_holdout``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import branchnet.tasks.extra  # noqa: F401  (registers attribute_group)
from branchnet.data import MultiTaskDataset
from branchnet.data.ondisk import (check_options, dataset_root, list_dir, missing, nonnegative_int, read_rgb,
                                   resize_rgb, split_ids)
from branchnet.errors import BadInput
from branchnet.tasks import TaskSpec

LAYOUT = "img_align_celeba/<000001>.jpg, list_attr_celeba.txt, list_eval_partition.txt"
OPTIONS = {"affinity_holdout": 500}
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
#: Maximum Roaming (Pascal et al., AAAI 2021), Table 4: the 8 groups of the 40 attributes.
GROUPS = {
    "global": ("Attractive", "Blurry", "Chubby", "Double_Chin", "Heavy_Makeup", "Male", "Oval_Face", "Pale_Skin",
               "Young"),
    "eyes": ("Bags_Under_Eyes", "Eyeglasses", "Narrow_Eyes", "Arched_Eyebrows", "Bushy_Eyebrows"),
    "hair": ("Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Receding_Hairline",
             "Straight_Hair", "Wavy_Hair"),
    "mouth": ("Big_Lips", "Mouth_Slightly_Open", "Smiling", "Wearing_Lipstick"),
    "nose": ("Big_Nose", "Pointy_Nose"),
    "beard": ("5_o_Clock_Shadow", "Goatee", "Mustache", "No_Beard", "Sideburns"),
    "cheeks": ("High_Cheekbones", "Rosy_Cheeks"),
    "wearings": ("Wearing_Earrings", "Wearing_Hat", "Wearing_Necklace", "Wearing_Necktie"),
}
PLACES = {"img_align_celeba": ("", "Img"), "list_attr_celeba.txt": ("", "Anno"),
          "list_eval_partition.txt": ("", "Eval")}

_CACHE: dict[tuple, Any] = {}


def locate(root: Path, name: str) -> Path:
    """``root/name`` or its Google Drive place (``Img/``, ``Anno/``, ``Eval/``)."""
    candidates = [root / sub / name if sub else root / name for sub in PLACES[name]]
    for path in candidates:
        if path.exists():
            return path
    raise missing(candidates[0], "celeba", LAYOUT)


def _cached(path: Path, parse):
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, parse.__name__)
    if key not in _CACHE:
        if len(_CACHE) >= 4:  # a couple of files of each kind is plenty
            _CACHE.clear()
        _CACHE[key] = parse(path)
    return _CACHE[key]


def parse_attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """``list_attr_celeba.txt`` -> (file names, uint8 (N, 40) in {0, 1} in :data:`ATTRIBUTES` order)."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise BadInput(f"celeba: {path} must start with the image count, then the 40 attribute names")
    names = lines[1].split()
    if sorted(names) != sorted(ATTRIBUTES):
        unknown = sorted(set(names) - set(ATTRIBUTES)) or sorted(set(ATTRIBUTES) - set(names))
        raise BadInput(f"celeba: {path} line 2 must name the 40 CelebA attributes; "
                       f"'{unknown[0] if unknown else names}' does not fit")
    order = [names.index(a) for a in ATTRIBUTES]
    files, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 41 or not set(tokens[1:]) <= {"1", "-1"}:
            raise BadInput(f"celeba: {path} line {number} must be a file name and 40 values of 1 or -1")
        files.append(tokens[0])
        rows.append([tokens[1 + i] == "1" for i in order])
    expected = int(lines[0].strip())
    if len(files) != expected:
        raise BadInput(f"celeba: {path} announces {expected} images but lists {len(files)}; the file is incomplete")
    return files, np.asarray(rows, dtype=np.uint8).reshape(len(files), len(ATTRIBUTES))


def parse_partition(path: Path) -> dict[str, int]:
    """``list_eval_partition.txt`` -> {file name: 0 train | 1 val | 2 test}."""
    partition: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
            raise BadInput(f"celeba: {path} line {number} must be '<file> 0|1|2' (train, val, test)")
        partition[tokens[0]] = int(tokens[1])
    return partition


class CelebADataset(MultiTaskDataset):
    """CelebA with its 40 attributes and Maximum Roaming's 8 groups (see the module docstring)."""

    name = "celeba"

    @classmethod
    def available_tasks(cls, options: dict[str, Any]) -> dict[str, TaskSpec]:
        check_options("celeba", options, OPTIONS)
        tasks = {a: TaskSpec("attribute", description=f"CelebA attribute {a}") for a in ATTRIBUTES}
        for group, members in GROUPS.items():
            tasks[group] = TaskSpec("attribute_group", num_classes=len(members),
                                    description=f"Maximum Roaming group: {', '.join(members)}")
        return tasks

    def __init__(self, data, split: str, tasks: list[str]) -> None:
        super().__init__(data, split, tasks)
        options = check_options("celeba", data.options, OPTIONS)
        holdout = nonnegative_int("celeba", options, "affinity_holdout")
        self.root = dataset_root(data.root, "celeba", LAYOUT)
        self.images = locate(self.root, "img_align_celeba")
        attr_path = locate(self.root, "list_attr_celeba.txt")
        partition_path = locate(self.root, "list_eval_partition.txt")
        files, values = _cached(attr_path, parse_attributes)
        partition = _cached(partition_path, parse_partition)
        official = {"train": 0, "affinity": 0, "val": 1, "test": 2}[split]
        listed = [name for name, part in partition.items() if part == official]
        self.files = split_ids(split, listed, holdout, data.splits.get(split), "celeba")
        row = {name: i for i, name in enumerate(files)}
        for name in self.files:
            if name not in row:
                raise BadInput(f"celeba: {name} is in {partition_path} but has no line in {attr_path}")
        self.values = values[[row[name] for name in self.files]] if self.files else values[:0]
        present = list_dir(self.images)
        for name in self.files:
            if name not in present:
                raise missing(self.images / name, "celeba", LAYOUT)
        self._columns = {a: ATTRIBUTES.index(a) for a in ATTRIBUTES}
        self._groups = {g: [ATTRIBUTES.index(a) for a in members] for g, members in GROUPS.items()}

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = resize_rgb(read_rgb(self.images / self.files[index]), self.image_size)
        row = self.values[index]
        targets: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task in self._groups:
                targets[task] = torch.from_numpy(row[self._groups[task]].astype(np.float32))
            else:
                targets[task] = torch.tensor(float(row[self._columns[task]]))
        return image, targets

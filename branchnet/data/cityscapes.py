"""``cityscapes``: Cityscapes (Cordts et al., CVPR 2016) as it is downloaded.

Layout under ``data.root`` (the archives leftImg8bit_trainvaltest.zip,
gtFine_trainvaltest.zip, disparity_trainvaltest.zip and camera_trainvaltest.zip
unpacked side by side)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     (seg)
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png  (instance)
    disparity/{train,val}/<city>/<city>_<seq>_<frame>_disparity.png        (depth, disparity)
    camera/{train,val}/<city>/<city>_<seq>_<frame>_camera.json             (depth)

Tasks (the branched-networks paper, Section 4.1, and the survey's Table 2):

========== =============== ===========================================================
task       type            definition
========== =============== ===========================================================
seg        segmentation    the 19 evaluation classes (trainIds of cityscapesScripts'
                           ``labels.py``); every other labelId -> 255 (ignored); mIoU
instance   instance_offset per pixel of a person/rider/car/truck/bus/train/motorcycle/
                           bicycle instance (instanceIds >= 1000), the vector to the
                           mean position of its instance, in pixels of the network
                           input; main metric ``l1``, the mean absolute offset error
                           per component (px), the papers' "I (px)"
depth      depth           metres: baseline * fx / disparity (camera json), disparity
                           = (p - 1) / 256 for a uint16 PNG value p > 0, p = 0 missing
disparity  depth           the same disparity in pixels of the network input (the
                           papers' "D (px)"): (p - 1) / 256 * W_input / W_file; main
                           metric ``mae``, the mean absolute disparity error (px)
========== =============== ===========================================================

Splits: the official test labels are withheld and the papers report on the official
validation set, so ``val`` and ``test`` are both the 500 validation images; ``train``
is the 2,975 training images less the ``affinity`` split, the ``affinity_holdout``
(default 250) training images first in SHA-1 order of their names (see
:mod:`branchnet.data.ondisk`). Options (``data.options``): ``affinity_holdout``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import branchnet.tasks.extra  # noqa: F401  (registers instance_offset)
from branchnet.data import MultiTaskDataset
from branchnet.data.ondisk import (check_options, dataset_root, label_tensor, map_tensor, missing,
                                   nonnegative_int, read_image, read_rgb, require, resize_nearest, resize_rgb,
                                   split_ids)
from branchnet.errors import BadInput
from branchnet.tasks import TaskSpec

LAYOUT = ("leftImg8bit/, gtFine/, disparity/, camera/ each with {train,val}/<city>/<city>_<seq>_<frame>_"
          "{leftImg8bit.png, gtFine_labelIds.png, gtFine_instanceIds.png, disparity.png, camera.json}")
OPTIONS = {"affinity_holdout": 250}
IGNORE = 255
#: labelId -> trainId for the 19 evaluation classes (cityscapesScripts, helpers/labels.py).
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
             26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
               "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
               "bicycle")
#: labelIds of the instance classes that have a trainId (caravan and trailer have none).
INSTANCE_LABELS = (24, 25, 26, 27, 28, 31, 32, 33)
SUFFIX = {"image": ("leftImg8bit", "_leftImg8bit.png"), "labels": ("gtFine", "_gtFine_labelIds.png"),
          "instances": ("gtFine", "_gtFine_instanceIds.png"), "disparity": ("disparity", "_disparity.png"),
          "camera": ("camera", "_camera.json")}
NEEDS = {"seg": ("labels",), "instance": ("instances",), "depth": ("disparity", "camera"),
         "disparity": ("disparity",)}

_LUT = np.full(256, IGNORE, dtype=np.uint8)
for _label, _train in TRAIN_IDS.items():
    _LUT[_label] = _train


def train_ids(label_ids: np.ndarray) -> np.ndarray:
    """labelIds (H, W) -> trainIds (H, W) uint8, 255 where the class is not evaluated."""
    return _LUT[np.clip(label_ids.astype(np.int64), 0, 255)]


def instance_offsets(instance_ids: np.ndarray) -> np.ndarray:
    """instanceIds (H, W) -> float32 (3, H, W): (dy, dx) to the instance centre and an on-mask.

    A pixel belongs to an instance when its value is ``labelId * 1000 + k`` with labelId
    in :data:`INSTANCE_LABELS`; the centre is the mean (row, col) of the instance's pixels.
    """
    ids = instance_ids.astype(np.int64)
    on = (ids >= 1000) & np.isin(ids // 1000, INSTANCE_LABELS)
    out = np.zeros((3,) + ids.shape, dtype=np.float32)
    if not on.any():
        return out
    rows, cols = np.nonzero(on)
    _, inverse = np.unique(ids[on], return_inverse=True)
    count = np.bincount(inverse)
    centre_r = np.bincount(inverse, weights=rows) / count
    centre_c = np.bincount(inverse, weights=cols) / count
    out[0][on] = centre_r[inverse] - rows
    out[1][on] = centre_c[inverse] - cols
    out[2][on] = 1.0
    return out


def decode_disparity(png: np.ndarray) -> np.ndarray:
    """uint16 disparity PNG -> float32 disparity in pixels, 0 where missing (p = 0)."""
    p = png.astype(np.float32)
    return np.where(p > 0, (p - 1.0) / 256.0, 0.0).astype(np.float32)


def read_camera(path: Path) -> tuple[float, float]:
    """(baseline in metres, fx in pixels) from a camera json."""
    try:
        camera = json.loads(path.read_text())
        return float(camera["extrinsic"]["baseline"]), float(camera["intrinsic"]["fx"])
    except FileNotFoundError:
        raise BadInput(f"cityscapes: missing {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"cityscapes: {path} is not a camera file with extrinsic.baseline and intrinsic.fx "
                       f"({exc.__class__.__name__}: {exc})") from None


def list_split(root: Path, split: str) -> dict[str, tuple[str, str]]:
    """Image name -> (official split, city) for every leftImg8bit image of ``split``."""
    folder = require(root / "leftImg8bit" / split, "cityscapes", LAYOUT)
    items: dict[str, tuple[str, str]] = {}
    for city in sorted(p for p in folder.iterdir() if p.is_dir()):
        for image in city.glob("*_leftImg8bit.png"):
            items[image.name[: -len("_leftImg8bit.png")]] = (split, city.name)
    if not items:
        raise missing(folder / "<city>" / "<city>_<seq>_<frame>_leftImg8bit.png", "cityscapes", LAYOUT)
    return items


class CityscapesDataset(MultiTaskDataset):
    """Cityscapes read from its published layout (see the module docstring)."""

    name = "cityscapes"
    #: disparity is a horizontal distance in pixels: it grows with the image when augmenting
    label_kinds = {"disparity": "disparity"}

    @classmethod
    def available_tasks(cls, options: dict[str, Any]) -> dict[str, TaskSpec]:
        check_options("cityscapes", options, OPTIONS)
        return {
            "seg": TaskSpec("segmentation", num_classes=len(CLASS_NAMES), ignore_index=IGNORE,
                            description="19 Cityscapes classes (trainIds)"),
            # "I (px)" and "D (px)" of the papers' tables: mean absolute errors per component /
            # per pixel, as Sener & Koltun's evaluation that the branched-networks paper follows
            "instance": TaskSpec("instance_offset", description="offset to the instance centre (px)",
                                 options={"main_metric": "l1"}),
            "depth": TaskSpec("depth", description="metric depth from disparity (m)"),
            "disparity": TaskSpec("depth", description="disparity in pixels of the network input",
                                  options={"main_metric": "mae"}),
        }

    def __init__(self, data, split: str, tasks: list[str]) -> None:
        super().__init__(data, split, tasks)
        options = check_options("cityscapes", data.options, OPTIONS)
        holdout = nonnegative_int("cityscapes", options, "affinity_holdout")
        self.root = dataset_root(data.root, "cityscapes", LAYOUT)
        official = {"train": list_split(self.root, "train"), "val": list_split(self.root, "val")}
        source = official["val" if split in ("val", "test") else "train"]
        names = split_ids(split, source, holdout, data.splits.get(split), "cityscapes")
        self.items = [(name,) + source[name] for name in names]
        self._check_files()

    def _path(self, index: int, kind: str) -> Path:
        name, split, city = self.items[index]
        folder, suffix = SUFFIX[kind]
        return self.root / folder / split / city / f"{name}{suffix}"

    def _check_files(self) -> None:
        kinds = list(dict.fromkeys(["image"] + [kind for task in self.tasks for kind in NEEDS[task]]))
        for split in dict.fromkeys(item[1] for item in self.items):
            for kind in kinds:  # a whole folder missing is named as such
                require(self.root / SUFFIX[kind][0] / split, "cityscapes", LAYOUT)
        for index in range(len(self.items)):
            for kind in kinds:
                path = self._path(index, kind)
                if not path.is_file():
                    raise missing(path, "cityscapes", LAYOUT)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rgb = read_rgb(self._path(index, "image"))
        size = self.image_size
        targets: dict[str, torch.Tensor] = {}
        disparity = None
        for task in self.tasks:
            if task == "seg":
                labels = train_ids(read_image(self._path(index, "labels")))
                targets[task] = label_tensor(resize_nearest(labels, size))
            elif task == "instance":
                instances = resize_nearest(read_image(self._path(index, "instances")), size)
                targets[task] = torch.from_numpy(instance_offsets(instances))
            else:
                if disparity is None:
                    disparity = decode_disparity(read_image(self._path(index, "disparity")))
                if task == "disparity":
                    scaled = resize_nearest(disparity, size) * (size[1] / disparity.shape[1])
                    targets[task] = map_tensor(scaled)
                else:
                    baseline, fx = read_camera(self._path(index, "camera"))
                    valid = disparity > 0
                    depth = np.where(valid, baseline * fx / np.where(valid, disparity, 1.0), 0.0)
                    targets[task] = map_tensor(resize_nearest(depth, size))
        return resize_rgb(rgb, size), targets

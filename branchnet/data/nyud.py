"""``nyud``: NYUD-v2 (Silberman et al., ECCV 2012) in the layout of the survey's code.

The survey's authors distribute NYUD-v2 as ``NYUD_MT`` (read by ``data/nyud.py`` of
Multi-Task-Learning-PyTorch, after ASTMT). Layout under ``data.root``::

    images/<id>.jpg            RGB
    segmentation/<id>.png      uint8: 0 = unlabelled, 1..40 = the 40 classes of Gupta et al.
    depth/<id>.npy             float (H, W) metres, 0 = missing
    normals/<id>.npy           float (H, W, 3) unit normals, zero vector = missing
    edge/<id>.npy              float (H, W) in {0, 1}
    gt_sets/train.txt          795 ids, one a line
    gt_sets/val.txt            654 ids, one a line

Tasks (the survey, Section 4.1 and Table 2):

========== ============ ===========================================================
task       type         definition
========== ============ ===========================================================
seg        segmentation 40 classes: PNG value k in 1..40 -> k - 1, 0 -> 255 (ignored,
                        as the survey's code does); mIoU
depth      depth        metres; RMSE
normals    normals      unit normals; mean angular error (degrees)
edges      edges        {0, 1} edge map; odsF with matching tolerance 0.011 of
                        the image diagonal (the NYUD-v2 benchmark's maxDist)
========== ============ ===========================================================

Splits: the survey trains on the 795 images and reports on the 654 (it calls them
its validation set), so ``val`` and ``test`` are both ``gt_sets/val.txt``; ``train`` is
``gt_sets/train.txt`` less the ``affinity`` split, the ``affinity_holdout`` (default
100) training ids first in SHA-1 order (see :mod:`branchnet.data.ondisk`).
Options (``data.options``): ``affinity_holdout``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from branchnet.data import MultiTaskDataset
from branchnet.data.ondisk import (check_options, dataset_root, label_tensor, list_dir, map_tensor,
                                   missing, nonnegative_int, read_image, read_npy, read_rgb, require,
                                   resize_nearest, resize_rgb, split_ids, unit_normals)
from branchnet.errors import BadInput
from branchnet.tasks import TaskSpec

LAYOUT = ("images/<id>.jpg, segmentation/<id>.png, depth/<id>.npy, normals/<id>.npy, edge/<id>.npy, "
          "gt_sets/{train,val}.txt (the survey's NYUD_MT)")
OPTIONS = {"affinity_holdout": 100}
NUM_CLASSES = 40
IGNORE = 255
FILES = {"image": ("images", ".jpg"), "seg": ("segmentation", ".png"), "depth": ("depth", ".npy"),
         "normals": ("normals", ".npy"), "edges": ("edge", ".npy")}


def read_ids(path: Path) -> list[str]:
    """The ids listed in a ``gt_sets`` file (one a line, blank lines skipped)."""
    require(path, "nyud", LAYOUT)
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise BadInput(f"nyud: {path} lists no images; expected one image id a line")
    return ids


def segmentation_classes(png: np.ndarray) -> np.ndarray:
    """Segmentation PNG (0 = unlabelled, 1..40) -> class ids 0..39 with 255 for unlabelled."""
    labels = png.astype(np.int64)
    if labels.ndim != 2:
        raise BadInput(f"nyud: segmentation must be a single-channel image, got shape {labels.shape}")
    return np.where((labels >= 1) & (labels <= NUM_CLASSES), labels - 1, IGNORE)


class NYUDDataset(MultiTaskDataset):
    """NYUD-v2 in the survey's NYUD_MT layout (see the module docstring)."""

    name = "nyud"

    @classmethod
    def available_tasks(cls, options: dict[str, Any]) -> dict[str, TaskSpec]:
        check_options("nyud", options, OPTIONS)
        return {
            "seg": TaskSpec("segmentation", num_classes=NUM_CLASSES, ignore_index=IGNORE,
                            description="40 NYUD-v2 classes"),
            "depth": TaskSpec("depth", description="depth (m)"),
            "normals": TaskSpec("normals", description="surface normals"),
            # the NYUD-v2 boundary benchmark's matching tolerance: 0.011 of the image diagonal
            "edges": TaskSpec("edges", description="edges derived from the semantic labels",
                              options={"max_dist": 0.011}),
        }

    def __init__(self, data, split: str, tasks: list[str]) -> None:
        super().__init__(data, split, tasks)
        options = check_options("nyud", data.options, OPTIONS)
        holdout = nonnegative_int("nyud", options, "affinity_holdout")
        self.root = dataset_root(data.root, "nyud", LAYOUT)
        official = "train" if split in ("train", "affinity") else "val"
        listed = read_ids(self.root / "gt_sets" / f"{official}.txt")
        self.ids = split_ids(split, listed, holdout, data.splits.get(split), "nyud")
        for kind in ["image"] + list(self.tasks):
            folder, suffix = FILES[kind]
            present = list_dir(require(self.root / folder, "nyud", LAYOUT))
            for item in self.ids:
                if item + suffix not in present:
                    raise missing(self.root / folder / (item + suffix), "nyud", LAYOUT)

    def _path(self, index: int, kind: str) -> Path:
        folder, suffix = FILES[kind]
        return self.root / folder / (self.ids[index] + suffix)

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rgb = read_rgb(self._path(index, "image"))
        size = self.image_size
        targets: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            path = self._path(index, task)
            if task == "seg":
                targets[task] = label_tensor(resize_nearest(segmentation_classes(read_image(path)), size))
                continue
            array = read_npy(path).astype(np.float32)
            if task != "normals" and array.ndim == 3 and array.shape[2] == 1:
                array = array[..., 0]
            if (array.ndim, array.shape[2:]) != ((3, (3,)) if task == "normals" else (2, ())):
                want = "(H, W, 3)" if task == "normals" else "(H, W)"
                raise BadInput(f"nyud: {path} has shape {array.shape}, expected {want}")
            array = resize_nearest(array, size)
            if task == "normals":
                targets[task] = unit_normals(array)
            elif task == "depth":
                targets[task] = map_tensor(np.where(np.isfinite(array) & (array > 0), array, 0.0))
            else:
                targets[task] = map_tensor((array > 0.5).astype(np.float32))
        return resize_rgb(rgb, size), targets

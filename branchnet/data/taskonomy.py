"""``taskonomy``: Taskonomy (Zamir et al., CVPR 2018), the tiny split's buildings.

Files are named ``point_<p>_view_<v>_domain_<domain>.<png|npy>`` and grouped by domain
and building. Under ``data.root`` any of the published arrangements is read:

* ``<domain>/<building>/...`` (the layout Standley et al.'s code reads),
* ``<domain>/taskonomy/<building>/...`` (what ``omnitools.download`` writes),
* ``<building>/<domain>/...`` (the per-building archives unpacked in place),

with the split file ``train_val_test_tiny.csv`` of the official ``splits_taskonomy.zip``
(header ``id,train,val,test``, one building a row, 1 marking its split) at the root or
in ``splits_taskonomy/``. The tiny partition has 25 / 5 / 5 buildings
(the papers' 275k / 52k / 54k images).

Tasks: the five of Standley et al. (Section 4: semantic segmentation, depth, surface
normals, 2D keypoints, edges) plus scene classification, the branched-networks paper's
sixth (Section 4.2):

========= =============== ================== =========================================
task      type            domain             target
========= =============== ================== =========================================
seg       segmentation    segment_semantic   PNG value 0 ("uncertain") -> 255 (ignored),
                                             1 background -> 0, 2..17 (16 COCO
                                             classes) -> 1..16: 17 classes; mIoU
depth     depth           depth_zbuffer      uint16 / 512 = metres; 65535 (no
                                             surface) -> 0 = missing; main metric
                                             mae (the paper's "D (L1)"), RMSE too
normals   normals         normal             RGB 127-centred: v / 127.5 - 1,
                                             renormalised; grey (no surface) missing
keypoints keypoints       keypoints2d        heatmap: value / 65535 (16-bit PNG); L1
edges     edge_map        edge_occlusion     3D occlusion edges (Standley's "edges"):
                                             value / 65535; L1
scene     classification  class_scene        argmax of the .npy class scores
                                             (Places365: 365 classes); main metric
                                             top5 (Table 1's "C (Top-5)"), top-1 too
========= =============== ================== =========================================

The L1 tasks keep the dataset's 16-bit scale divided by 65535, the scale on which the
branched-networks paper's Table 1 reports "E (L1)" and "K (L1)" (times 100).

Splits: ``train``, ``val``, ``test`` are the buildings of the split file; ``affinity``
is the ``affinity_holdout`` (default 500) training images first in SHA-1 order of
``<building>/point_<p>_view_<v>``, removed from ``train`` (see
:mod:`branchnet.data.ondisk`). An image missing a label the configured tasks need is
an error naming the file; with ``skip_incomplete: true``, images missing any of the six
label files are dropped instead (whatever tasks are configured, so every task sees the
same images). Options (``data.options``): ``affinity_holdout``, ``partition`` (tiny,
medium, full, fullplus), ``split_file`` (a path; default: found as above),
``scene_classes`` (365), ``skip_incomplete`` (false).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

import branchnet.tasks.extra  # noqa: F401  (registers edge_map)
from branchnet.data import MultiTaskDataset
from branchnet.data.ondisk import (check_options, choice, dataset_root, label_tensor, list_dir,
                                   map_tensor, missing, nonnegative_int, read_image, read_npy, read_rgb,
                                   resize_nearest, resize_rgb, split_ids, unit_normals)
from branchnet.errors import BadInput
from branchnet.tasks import TaskSpec

LAYOUT = ("<domain>/<building>/point_<p>_view_<v>_domain_<domain>.png (or <building>/<domain>/..., "
          "<domain>/taskonomy/<building>/...) for rgb and the task domains, and train_val_test_tiny.csv")
OPTIONS = {"affinity_holdout": 500, "partition": "tiny", "split_file": None, "scene_classes": 365,
           "skip_incomplete": False}
PARTITIONS = ("tiny", "medium", "full", "fullplus")
#: task -> (domain folder names accepted, file extension)
DOMAINS = {
    "rgb": (("rgb",), "png"),
    "seg": (("segment_semantic", "segmentsemantic"), "png"),
    "depth": (("depth_zbuffer",), "png"),
    "normals": (("normal",), "png"),
    "keypoints": (("keypoints2d",), "png"),
    "edges": (("edge_occlusion",), "png"),
    "scene": (("class_scene",), "npy"),
}
SEG_CLASSES = 17
IGNORE = 255
DEPTH_UNITS_PER_METRE = 512.0
NO_DEPTH = 65535
NAME = re.compile(r"^(point_\d+_view_\d+)_domain_[A-Za-z0-9_]+\.(png|npy)$")


def read_split_file(path: Path) -> dict[str, list[str]]:
    """``train_val_test_<partition>.csv`` -> {"train": [...], "val": [...], "test": [...]} buildings."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise BadInput(f"taskonomy: {path} is empty; expected a header 'id,train,val,test' and one building a row")
    header = [cell.strip().lower() for cell in rows[0]]
    columns = {name: header.index(name) for name in ("train", "val", "test") if name in header}
    if len(columns) != 3:
        raise BadInput(f"taskonomy: {path} must have the header 'id,train,val,test', got {','.join(rows[0])}")
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for number, row in enumerate(rows[1:], start=2):
        flags = [name for name, col in columns.items() if col < len(row) and row[col].strip() == "1"]
        if len(flags) > 1:
            raise BadInput(f"taskonomy: {path} line {number}: building {row[0]} is marked for {' and '.join(flags)}")
        if flags:
            splits[flags[0]].append(row[0].strip())
    return splits


class TaskonomyDataset(MultiTaskDataset):
    """Taskonomy's tiny split as it lies on disk (see the module docstring)."""

    name = "taskonomy"

    @classmethod
    def options(cls, options: dict[str, Any]) -> dict[str, Any]:
        merged = check_options("taskonomy", options, OPTIONS)
        nonnegative_int("taskonomy", merged, "affinity_holdout")
        choice("taskonomy", merged, "partition", PARTITIONS)
        classes = merged["scene_classes"]
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise BadInput(f"taskonomy option 'data.options.scene_classes' must be an integer >= 2, got {classes!r}")
        if not isinstance(merged["skip_incomplete"], bool):
            raise BadInput("taskonomy option 'data.options.skip_incomplete' must be true or false")
        return merged

    @classmethod
    def available_tasks(cls, options: dict[str, Any]) -> dict[str, TaskSpec]:
        classes = cls.options(options)["scene_classes"]
        return {
            "seg": TaskSpec("segmentation", num_classes=SEG_CLASSES, ignore_index=IGNORE,
                            description="background + 16 COCO classes (distilled)"),
            # the branched-networks paper's Table 1: "D (L1)", "C (Top-5)"
            "depth": TaskSpec("depth", description="z-buffer depth (m)", options={"main_metric": "mae"}),
            "normals": TaskSpec("normals", description="surface normals"),
            "keypoints": TaskSpec("keypoints", description="2D keypoint heatmap"),
            "edges": TaskSpec("edge_map", description="3D occlusion edges"),
            "scene": TaskSpec("classification", num_classes=classes, description="scene class (Places365)",
                              options={"main_metric": "top5" if classes > 5 else "accuracy"}),
        }

    def __init__(self, data, split: str, tasks: list[str]) -> None:
        super().__init__(data, split, tasks)
        options = self.options(data.options)
        self.scene_classes = options["scene_classes"]
        self.root = dataset_root(data.root, "taskonomy", LAYOUT)
        buildings = read_split_file(self._split_file(options))
        self.arrangement = self._arrangement(buildings)
        needed = ["rgb"] + list(self.tasks)
        checked = list(DOMAINS) if options["skip_incomplete"] else needed
        # which buildings this split reads: affinity comes out of train
        official = "train" if split in ("train", "affinity") else split
        ids: list[str] = []
        names: dict[str, tuple[str, ...]] = {}
        self.folders: dict[tuple[str, str], Path] = {}
        for building in buildings[official]:
            listing = {task: self._listing(building, task) for task in checked}
            for task in needed:
                self.folders[building, task] = listing[task][0]
            for image_id in sorted(listing["rgb"][1]):
                lacking = [task for task in checked if image_id not in listing[task][1]]
                if lacking and options["skip_incomplete"]:
                    continue
                if lacking:
                    domains, ext = DOMAINS[lacking[0]]
                    raise missing(listing[lacking[0]][0] / f"{image_id}_domain_{domains[0]}.{ext}", "taskonomy",
                                  LAYOUT, "; set data.options.skip_incomplete: true to drop images that lack a label")
                item = f"{building}/{image_id}"
                ids.append(item)
                names[item] = tuple(listing[task][1][image_id] for task in needed)
        if not ids:
            raise BadInput(f"taskonomy: the {official} buildings of the split file hold no complete images under "
                           f"{self.root}; expected {LAYOUT}")
        self.needed = needed
        self.items = split_ids(split, ids, options["affinity_holdout"], data.splits.get(split), "taskonomy")
        self.names = {item: names[item] for item in self.items}

    # -- layout ----------------------------------------------------------------------

    def _split_file(self, options: dict[str, Any]) -> Path:
        if options["split_file"]:
            path = Path(str(options["split_file"])).expanduser()
            if not path.is_absolute():
                path = self.root / path
            if not path.is_file():
                raise missing(path, "taskonomy", LAYOUT)
            return path
        name = f"train_val_test_{options['partition']}.csv"
        candidates = [self.root / name, self.root / "splits_taskonomy" / name, self.root / "splits" / name]
        for path in candidates:
            if path.is_file():
                return path
        raise missing(candidates[0], "taskonomy", LAYOUT)

    def _arrangement(self, buildings: dict[str, list[str]]) -> str:
        """``domain`` (<domain>/<building>), ``omnidata`` or ``building`` (<building>/<domain>)."""
        if (self.root / "rgb").is_dir():
            return "omnidata" if (self.root / "rgb" / "taskonomy").is_dir() else "domain"
        first = next((b for split in ("train", "val", "test") for b in buildings[split]), None)
        if first is not None and (self.root / first).is_dir():
            return "building"
        raise missing(self.root / "rgb" / (first or "<building>"), "taskonomy", LAYOUT)

    def _folder(self, building: str, domain: str) -> Path:
        if self.arrangement == "domain":
            return self.root / domain / building
        if self.arrangement == "omnidata":
            return self.root / domain / "taskonomy" / building
        return self.root / building / domain

    def _listing(self, building: str, task: str) -> tuple[Path, dict[str, str]]:
        """(folder, {image id: file name}) of ``task``'s domain in ``building``."""
        names, ext = DOMAINS[task]
        for domain in names:
            folder = self._folder(building, domain)
            if folder.is_dir():
                files: dict[str, str] = {}
                for name in list_dir(folder):
                    match = NAME.match(name)
                    if match and match.group(2) == ext:
                        files[match.group(1)] = name
                return folder, files
        raise missing(self._folder(building, names[0]), "taskonomy", LAYOUT)

    # -- items -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        item = self.items[index]
        building = item.split("/", 1)[0]
        files = {task: self.folders[building, task] / name for task, name in zip(self.needed, self.names[item])}
        size = self.image_size
        image = resize_rgb(read_rgb(files["rgb"]), size)
        targets: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            path = files[task]
            if task == "scene":
                scores = read_npy(path).reshape(-1)
                if scores.size != self.scene_classes:
                    raise BadInput(f"taskonomy: {path} holds {scores.size} scene scores, expected "
                                   f"{self.scene_classes} (data.options.scene_classes)")
                targets[task] = torch.tensor(int(np.argmax(scores)), dtype=torch.int64)
                continue
            array = read_image(path)
            if task == "normals":
                if array.ndim != 3 or array.dtype != np.uint8:
                    raise BadInput(f"taskonomy: {path} must be an 8-bit RGB normal map")
                targets[task] = unit_normals(resize_nearest(array[..., :3].astype(np.float32) / 127.5 - 1.0, size))
                continue
            if array.ndim == 3:
                array = array[..., 0]
            array = resize_nearest(array, size)
            if task == "seg":
                labels = array.astype(np.int64)
                targets[task] = label_tensor(np.where((labels >= 1) & (labels <= SEG_CLASSES), labels - 1, IGNORE))
            elif task == "depth":
                raw = array.astype(np.float32)
                valid = (array != NO_DEPTH) & (array > 0)
                targets[task] = map_tensor(np.where(valid, raw / DEPTH_UNITS_PER_METRE, 0.0))
            else:  # keypoints, edges: the stored scale divided by the format's maximum
                top = 65535.0 if array.dtype == np.uint16 else 255.0
                targets[task] = map_tensor(array.astype(np.float32) / top)
        return image, targets

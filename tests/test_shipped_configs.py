"""The real-dataset configs' augmentation and decoders, trained for one epoch on the readers'
fixture trees (a thin encoder stands in for the papers'; the augmentation, the decoder
type and the evaluation protocol are the shipped ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from branchnet.config import config_from_dict
from branchnet.data import build_dataset, build_tasks
from branchnet.nn.branched import BranchedNet
from branchnet.nn.heads import head_name
from branchnet.train.engine import fit
from branchnet.tree import shared_partitions

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _cityscapes(root):
    from test_datasets_cityscapes import CITIES, make_item

    rng = np.random.default_rng(0)
    for split, cities in CITIES.items():
        for city, count in cities.items():
            for k in range(count):
                make_item(rng, root, split, city, k)
    return [32, 64], None


def _nyud(root):
    from test_datasets_nyud import write_nyud

    write_nyud(root)
    return [24, 32], None


def _celeba(root):
    from test_datasets_celeba import write_celeba

    write_celeba(root, np.random.default_rng(2))
    return [32, 32], ["Smiling", "Male", "Eyeglasses"]


def _taskonomy(root):
    from test_datasets_taskonomy import write_taskonomy

    write_taskonomy(root)
    return [32, 32], None


TREES = {"cityscapes": _cityscapes, "nyud": _nyud, "celeba": _celeba, "taskonomy": _taskonomy}
EXPECTED_HEADS = {"cityscapes": "psp", "nyud": "simple", "celeba": "linear", "taskonomy": "fcn"}


@pytest.mark.parametrize("name", sorted(TREES))
def test_shipped_config_trains_with_its_augmentation_and_decoder(name, tmp_path):
    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    (tmp_path / name).mkdir()
    size, tasks = TREES[name](tmp_path / name)
    raw["data"].update(root=str(tmp_path / name), image_size=size, splits={}, workers=0)
    raw["data"]["options"]["affinity_holdout"] = 2
    if tasks:
        raw["tasks"] = tasks
    raw["model"].update(backbone="resnet18", width=0.125, pretrained=None, head_channels=8,
                        fcn_widths=[8, 8, 4, 4, 4])
    raw["train"].update(epochs=1, batch_size=2, device="cpu", amp=False)
    config = config_from_dict(raw, source=name)
    assert config.data.augment is not None and config.data.augment.flip
    train, val = build_dataset(config, "train"), build_dataset(config, "val")
    assert train.augmenter is not None and val.augmenter is None
    task_objects = build_tasks(config)
    heads = {head_name(t, config.model) for t in task_objects}
    assert EXPECTED_HEADS[name] in heads
    torch.manual_seed(0)
    model = BranchedNet(task_objects, shared_partitions(config.task_names, 4), config.model, tuple(size))
    result = fit(model, task_objects, config, tmp_path / "out", train, val, quiet=True)
    for task in task_objects:
        value = result.val[task.name][task.main_metric]
        assert np.isfinite(value), (task.name, result.val[task.name])
    if name == "nyud":
        assert "pixel_odsF" in result.val["edges"] and task_objects[-1].options["max_dist"] == 0.011

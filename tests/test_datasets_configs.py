"""The dataset configs load, name tasks their datasets offer, and use the papers' settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from branchnet.nn.backbones import supported_backbones
from branchnet.config import load_config
from branchnet.data import build_tasks
from branchnet.data.celeba import ATTRIBUTES

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

EXPECTED = {  # dataset: (image size, backbone, output stride, task types)
    "cityscapes": ([256, 512], "resnet50", 8, ["segmentation", "instance_offset", "depth"]),
    "nyud": ([480, 640], "hrnet_w18_small_v2", 32, ["segmentation", "depth", "normals", "edges"]),
    "celeba": ([64, 64], "resnet18", 32, ["attribute"] * 40),
    "taskonomy": ([256, 256], "resnet50", 16,
                  ["segmentation", "depth", "normals", "keypoints", "edge_map", "classification"]),
    "multimnist": ([36, 36], "resnet18", 8,
                   ["classification", "classification", "segmentation", "attribute", "attribute", "attribute"]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_binds_its_tasks(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    size, backbone, stride, types = EXPECTED[name]
    assert config.data.dataset == name and config.name == name
    assert config.data.image_size == size
    assert config.model.backbone == backbone and backbone in supported_backbones()
    assert config.model.output_stride == stride
    assert [task.type_name for task in build_tasks(config)] == types


def test_celeba_config_lists_the_40_attributes_in_order():
    assert load_config(CONFIGS / "celeba.yaml").task_names == list(ATTRIBUTES)

"""Staged timm encoders: the split computes timm's forward; costs add up; bad names fail clearly."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from branchnet.nn.backbones import build_stages, count_flops, count_params, create_timm_model, split_stages, stage_costs
from branchnet.config import ModelConfig
from branchnet.errors import BadInput
from branchnet.nn.heads import DenseHead, ImageHead


def _run(stages, x):
    outs = []
    for stage in stages:
        x = stage(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize("name, kwargs", [
    ("resnet18", {"width": 0.25}),
    ("resnet18", {"width": 0.25, "output_stride": 8}),
    ("resnet10t", {"width": 0.25}),
    ("resnet26d", {"width": 0.125, "output_stride": 16}),
])
def test_resnet_stages_equal_timm_forward(name, kwargs):
    torch.manual_seed(0)
    model = create_timm_model(ModelConfig(backbone=name, **kwargs)).eval()
    stages = split_stages(model, name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = _run(stages, x)
        torch.testing.assert_close(outs[-1], model.forward_features(x), rtol=0, atol=0)
        # branch point 1 is layer1's output: compare with timm's own intermediates
        _, intermediates = model.forward_intermediates(x, indices=[1, 2, 3, 4])
    for ours, theirs in zip(outs, intermediates):
        torch.testing.assert_close(ours, theirs)
    assert count_params(stages) == count_params(model)


def test_hrnet_stages_equal_timm_stages():
    torch.manual_seed(0)
    model = create_timm_model(ModelConfig(backbone="hrnet_w18_small")).eval()
    stages = split_stages(model, "hrnet_w18_small")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = _run(stages, x)
        stem = model.act2(model.bn2(model.conv2(model.act1(model.bn1(model.conv1(x))))))
        expected = model.stages(stem)
    assert isinstance(outs[-1], list) and len(outs[-1]) == 4
    for ours, theirs in zip(outs[-1], expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert [len(o) if isinstance(o, list) else 1 for o in outs] == [1, 2, 3, 4]
    neck = sum(count_params(getattr(model, m)) for m in ("incre_modules", "downsamp_modules", "final_layer"))
    assert count_params(stages) == count_params(model) - neck


def test_layout_describes_branch_points():
    stages, layout = build_stages(ModelConfig(backbone="resnet18", width=0.25, output_stride=8), (64, 64))
    assert layout.locations == ("layer1", "layer2", "layer3", "layer4")
    assert layout.channels == ((16,), (32,), (64,), (128,))
    assert layout.reductions == ((4,), (8,), (8,), (8,))
    _, hr = build_stages(ModelConfig(backbone="hrnet_w18_small"), (64, 64))
    assert hr.reductions[-1] == (4, 8, 16, 32)


def test_flops_follow_the_convolution_formula():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, torch.zeros(1, 3, 16, 16)) == 2 * 3 * 8 * 9 * 16 * 16
    linear = nn.Linear(10, 4)
    assert count_flops(linear, torch.zeros(1, 10)) == 2 * 10 * 4


def test_stage_costs_add_up_to_the_whole_encoder():
    stages, _ = build_stages(ModelConfig(backbone="resnet18", width=0.25), (64, 64))
    params, flops = stage_costs(stages, (64, 64))
    assert sum(params) == count_params(stages)
    assert sum(flops) == count_flops(nn.Sequential(*stages), torch.zeros(1, 3, 64, 64))
    assert all(f > 0 for f in flops)


def test_width_scales_channels_and_keeps_depth():
    thin = create_timm_model(ModelConfig(backbone="resnet18", width=0.5))
    full = create_timm_model(ModelConfig(backbone="resnet18"))
    assert thin.layer4[-1].conv2.out_channels == 256 and full.layer4[-1].conv2.out_channels == 512
    assert len(thin.layer3) == len(full.layer3)


def test_heads_predict_at_input_resolution():
    dense = DenseHead([16, 32, 64], 5, 8)
    feats = [torch.randn(2, 16, 16, 16), torch.randn(2, 32, 8, 8), torch.randn(2, 64, 4, 4)]
    assert dense(feats, (64, 64)).shape == (2, 5, 64, 64)
    image = ImageHead([16, 32, 64], 3)
    assert image(feats).shape == (2, 3)


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(BadInput, match="unknown backbone 'resnet19'.*valid:.*resnet18"):
        create_timm_model(ModelConfig(backbone="resnet19"))
    with pytest.raises(BadInput, match="ResNet backbones only"):
        create_timm_model(ModelConfig(backbone="hrnet_w18_small", width=0.5))


def test_local_pretrained_weights_are_loaded(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = create_timm_model(ModelConfig(backbone="resnet18", pretrained=str(path)))
    torch.testing.assert_close(model.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="cannot be read"):
        create_timm_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "bad.pth")))
    with pytest.raises(BadInput, match="do not exist"):
        create_timm_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "none.pth")))
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(BadInput, match="do not fit"):
        create_timm_model(ModelConfig(backbone="resnet34", pretrained=str(tmp_path / "r18.pth")))


def test_flops_are_counted_once_per_structure_and_input_shape():
    from branchnet.nn.backbones import _FLOPS, _count_flops

    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.zeros(1, 3, 16, 16)
    first = count_flops(conv, x)
    assert first == _count_flops(conv, x) and len([k for k in _FLOPS if "Conv2d(3, 8" in k[0]]) >= 1
    assert count_flops(nn.Conv2d(3, 8, 3, padding=1), x) == first  # another copy: the same count
    assert count_flops(conv, torch.zeros(1, 3, 32, 32)) == 4 * first  # another shape: counted again
    assert count_flops(nn.Conv2d(3, 8, 3, padding=1, stride=2), x) == first // 4  # another setting


def test_a_record_of_files_hashed_as_written_equals_one_read_back(tmp_path):
    import hashlib

    from branchnet.atomic import atomic_torch_save, atomic_write_json
    from branchnet.runs import read_record, write_record

    written = {"model.pt": {}, "metrics.json": {}}
    atomic_torch_save(tmp_path / "model.pt", {"w": torch.arange(1000.0)}, written["model.pt"])
    atomic_write_json(tmp_path / "metrics.json", {"a": 1}, written=written["metrics.json"])
    for name, digest in written.items():
        data = (tmp_path / name).read_bytes()
        assert digest == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_record(tmp_path, {"kind": "x"}, digests=written)
    assert read_record(tmp_path)[0] is not None
    assert torch.load(tmp_path / "model.pt", weights_only=True)["w"][-1] == 999.0

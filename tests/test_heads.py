"""Decoders: shapes on ResNet and HRNet features, parameters against a hand count, FLOPs
against a direct count, and the head each task gets (with the one-line errors)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from branchnet.config import ModelConfig, config_from_dict
from branchnet.errors import BadInput
from branchnet.nn.backbones import count_flops, count_params
from branchnet.nn.branched import BranchedNet
from branchnet.nn.heads import ASPPHead, DenseHead, FCNHead, ImageHead, PSPHead, build_head, fcn_stage_depths
from branchnet.tasks import TaskSpec, make_task
from branchnet.tree import shared_partitions

RESNET = [torch.randn(2, 16, 8, 8)]  # one map (a ResNet's layer4 at output stride 8 of 64 x 64)
HRNET = [torch.randn(2, 4, 16, 16), torch.randn(2, 8, 8, 8), torch.randn(2, 12, 4, 4), torch.randn(2, 16, 2, 2)]


def heads(in_channels):
    return {
        "simple": DenseHead(in_channels, 3, 8),
        "aspp": ASPPHead(in_channels, 3, 8, [1, 2]),
        "psp": PSPHead(in_channels, 3, 8, [1, 2]),
        "fcn": FCNHead(in_channels, 3, 4, [8, 4]),
    }


@pytest.mark.parametrize("features", [RESNET, HRNET], ids=["resnet", "hrnet"])
def test_every_dense_head_predicts_at_the_input_size(features):
    for name, head in heads([f.shape[1] for f in features]).items():
        head.train()
        assert head(features, (64, 64)).shape == (2, 3, 64, 64), name
        assert head(features[0] if len(features) == 1 else features, (30, 50)).shape == (2, 3, 30, 50), name
    assert ImageHead([f.shape[1] for f in features], 5)(features).shape == (2, 5)


def bn(c):  # BatchNorm2d: weight and bias
    return 2 * c


def test_parameter_counts_by_hand():
    c, w, out = 16, 8, 3
    built = heads([c])
    assert count_params(built["simple"]) == c * w * 9 + bn(w) + w * out + out
    aspp = (c * w + bn(w)) + 2 * (c * w * 9 + bn(w)) + (c * w + bn(w))  # 1x1, two 3x3, image pooling
    aspp += 4 * w * w + bn(w) + w * w * 9 + bn(w) + w * out + out     # projection, 3x3, prediction
    assert count_params(built["aspp"]) == aspp
    psp = 2 * (c * w + bn(w)) + (c + 2 * w) * w * 9 + bn(w) + w * out + out
    assert count_params(built["psp"]) == psp
    # fcn: 4 layers = 3 convs in stages of depth [2, 1] (widths 8, 4) and the prediction
    assert fcn_stage_depths(4, 2) == [2, 1]
    fcn = (c * 8 * 9 + bn(8)) + (8 * 8 * 9 + bn(8)) + (8 * 4 * 9 + bn(4)) + 4 * out + out
    assert count_params(built["fcn"]) == fcn
    assert count_params(ImageHead([c], 5)) == c * 5 + 5


def test_the_flops_counter_agrees_with_a_direct_count():
    conv = nn.Conv2d(16, 8, 3, padding=2, dilation=2, bias=False)
    x = torch.randn(1, 16, 10, 12)
    assert count_flops(conv, x) == 2 * 16 * 8 * 9 * 10 * 12  # a multiply-add counts 2
    head = DenseHead([16], 3, 8)
    # the 3x3 fusion and the 1x1 prediction at 10 x 12; pooling/upsampling/BN are not counted
    assert count_flops(head, x, (40, 48)) == 2 * (16 * 8 * 9 + 8 * 3) * 10 * 12
    fcn = FCNHead([16], 3, 4, [8, 4])  # stage 0 at 10 x 12, stage 1 and the prediction at 20 x 24
    assert count_flops(fcn, x, (40, 48)) == 2 * ((16 * 8 + 8 * 8) * 9 * 120 + (8 * 4 * 9 + 4 * 3) * 480)


def test_branched_net_costs_include_the_configured_decoders():
    tasks = [make_task("seg", TaskSpec("segmentation", num_classes=4)), make_task("depth", TaskSpec("depth")),
             make_task("count", TaskSpec("classification", num_classes=5))]
    model = ModelConfig(backbone="resnet18", width=0.125, output_stride=8, head="psp", head_channels=8,
                        psp_bins=[1, 2], heads={"depth": "aspp"}, aspp_rates=[2, 4])
    torch.manual_seed(0)
    net = BranchedNet(tasks, shared_partitions(["seg", "depth", "count"], 4), model, (32, 32))
    assert isinstance(net.heads["seg"], PSPHead) and isinstance(net.heads["depth"], ASPPHead)
    assert isinstance(net.heads["count"], ImageHead)
    costs = net.costs()
    assert costs["head_params"] == {t: count_params(net.heads[t]) for t in ("seg", "depth", "count")}
    assert costs["params"] == sum(costs["stage_params"]) + sum(costs["head_params"].values())
    out = net(torch.randn(2, 3, 32, 32))
    assert out["seg"].shape == (2, 4, 32, 32) and out["depth"].shape == (2, 1, 32, 32)
    assert out["count"].shape == (2, 5)


def test_head_choice_errors_are_one_line():
    count = make_task("count", TaskSpec("classification", num_classes=5))
    seg = make_task("seg", TaskSpec("segmentation", num_classes=4))
    with pytest.raises(BadInput, match="image-level.*'aspp', a dense decoder.*'linear'") as err:
        build_head(count, [16], ModelConfig(heads={"count": "aspp"}))
    assert "\n" not in str(err.value)
    with pytest.raises(BadInput, match="dense .*'linear'.*simple, aspp, psp, fcn"):
        build_head(seg, [16], ModelConfig(heads={"seg": "linear"}))
    assert isinstance(build_head(count, [16], ModelConfig(head="fcn")), ImageHead)  # model.head: dense tasks only


@pytest.mark.parametrize("model, message", [
    ({"head": "pspnet"}, r"'model.head' is 'pspnet' \(did you mean 'psp'\?\); valid: simple, aspp, psp, fcn"),
    ({"heads": {"sge": "psp"}}, r"'model.heads.sge' names no task.*did you mean 'seg'"),
    ({"heads": {"seg": "deeplab"}}, r"'model.heads.seg' is 'deeplab'.*valid: simple, aspp, psp, fcn, linear"),
    ({"fcn_layers": 3, "fcn_widths": [8, 4, 2]}, r"fcn_layers' is 3 but the 3 stages.*at least 4"),
    ({"psp_bins": []}, r"'model.psp_bins' must be a non-empty list"),
])
def test_config_refuses_bad_heads(model, message):
    with pytest.raises(BadInput, match=message):
        config_from_dict({"tasks": ["seg", "depth"], "model": model})


def test_cli_refuses_a_dense_decoder_for_an_image_level_task(cli, tiny_config, tmp_path):
    from conftest import assert_one_line_error

    config = tiny_config(("seg", "count"), **{"head_channels: 8": "head_channels: 8, heads: {count: psp}"})
    result = cli("train-single", "--config", config, "--runs", tmp_path / "runs", "--task", "count")
    assert_one_line_error(result, "task 'count' is image-level", "'linear'")
    config = tiny_config(("seg",), **{"head_channels: 8": "head_channels: 8, head: deeplab"})
    assert_one_line_error(cli("train-single", "--config", config, "--runs", tmp_path / "runs"),
                          "'model.head' is 'deeplab'", "valid: simple, aspp, psp, fcn")

"""``branchnet profile``: the structure of its figures (every node and head of the tree, the
all-shared and all-separate networks beside it, positive finite times, memory at least the
weights), the live-bytes counter against a direct count, and the one-line errors.

Timings are reported, never asserted: the sum of a network's parts over its end-to-end time
is printed by the command (``parts/whole``) and lands in the JSON, where a reader can see
how well the latency model holds on this machine.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from branchnet.config import load_config
from branchnet.data import build_tasks
from branchnet.nn.branched import BranchedNet
from branchnet.model_file import save_model
from branchnet.tree import Tree, save_tree
from conftest import TINY_CONFIG, assert_one_line_error

TREE = [[["seg", "depth", "edges"]], [["seg", "depth"], ["edges"]], [["seg", "depth"], ["edges"]],
        [["seg"], ["depth"], ["edges"]]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    config_path = root / "tiny.yaml"
    config_path.write_text(TINY_CONFIG.format(root=root / "cache", tasks="[seg, depth, edges]")
                           .replace("width: 0.125", "width: 0.0625"))
    config = load_config(config_path)
    torch.manual_seed(0)
    net = BranchedNet(build_tasks(config), TREE, config.model, config.image_size)
    model = save_model(root / "branched" / "tree" / "model.pt", net, config, "branched")
    tree = save_tree(root / "tree.json", Tree(tasks=config.task_names, locations=list(net.layout.locations),
                                              partitions=TREE, params=0, flops=None, dissimilarity=0.0))
    return {"config": config_path, "model": model, "tree": tree, "net": net}


def _check_network(info, partitions, weights_bytes=None):
    assert info["partitions"] == partitions
    nodes = [p for p in info["parts"] if p["kind"] == "node"]
    heads = [p for p in info["parts"] if p["kind"] == "head"]
    assert [(p["stage"], sorted(p["tasks"])) for p in nodes] == [
        (d, sorted(g)) for d, part in enumerate(partitions) for g in part]
    assert [p["name"] for p in heads] == ["seg", "depth", "edges"]
    for timing in [info["end_to_end"]] + info["parts"]:
        assert timing["samples"] == 3
        assert math.isfinite(timing["median_s"]) and timing["median_s"] > 0
        assert 0 <= timing["p25_s"] <= timing["median_s"] <= timing["p75_s"]
    assert info["parts_sum_s"] == pytest.approx(sum(p["median_s"] for p in info["parts"]))
    assert info["parts_sum_over_end_to_end"] == pytest.approx(info["parts_sum_s"] / info["end_to_end"]["median_s"])
    memory = info["memory"]
    assert memory["activations_bytes"] > 0 and memory["peak_bytes"] == memory["weights_bytes"] + memory["activations_bytes"]
    if weights_bytes is not None:
        assert memory["weights_bytes"] == weights_bytes


def test_profile_of_a_trained_model_times_every_part_beside_both_ends(cli, setup):
    result = cli("profile", setup["model"], "--batch", "1,2", "--repeats", 3, "--warmup", 1, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    written = setup["model"].with_name("model.profile-cpu.json")
    assert json.loads(written.read_text()) == report and written.with_suffix(".png").is_file()
    assert report["kind"] == "model" and report["device_type"] == "cpu" and report["threads"] == 1
    assert list(report["batches"]) == ["1", "2"]
    net = setup["net"]
    weights = sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))
    for batch in report["batches"].values():
        nets = batch["networks"]
        assert list(nets) == ["tree", "all-shared", "all-separate"]
        _check_network(nets["tree"], TREE, weights)
        _check_network(nets["all-shared"], [[["seg", "depth", "edges"]]] * 4)
        _check_network(nets["all-separate"], [[["seg"], ["depth"], ["edges"]]] * 4)
        assert nets["all-shared"]["params"] < nets["tree"]["params"] < nets["all-separate"]["params"]
        assert batch["tree_over_all_separate"] == pytest.approx(
            nets["tree"]["end_to_end"]["median_s"] / nets["all-separate"]["end_to_end"]["median_s"])
    # the tables: one row per network and batch, one per part of the tree
    table = cli("profile", setup["model"], "--repeats", 3, "--warmup", 1, "--no-write")
    assert table.code == 0, table.err
    for word in ("all-shared", "all-separate", "parts/whole", "layer4 s3_g2", "head edges"):
        assert word in table.out


def test_profile_of_a_tree_json_needs_a_config_and_uses_random_weights(cli, setup, tmp_path):
    out = tmp_path / "p.json"
    result = cli("profile", setup["tree"], "--config", setup["config"], "--repeats", 3, "--warmup", 0,
                 "--json", "--out", out, "--input-size", 32, 48)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["kind"] == "tree" and report["input_size"] == [32, 48] and out.is_file()
    _check_network(report["batches"]["1"]["networks"]["tree"], TREE)
    assert_one_line_error(cli("profile", setup["tree"]), "needs --config")
    assert_one_line_error(cli("profile", setup["model"], "--config", setup["config"]), "drop --config")


def test_bad_input_fails_in_one_line(cli, setup, tmp_path):
    if not torch.cuda.is_available():
        assert_one_line_error(cli("profile", setup["model"], "--device", "cuda"), "no CUDA GPU")
    assert_one_line_error(cli("profile", setup["model"], "--batch", "1,x"), "--batch '1,x'")
    assert_one_line_error(cli("profile", setup["model"], "--batch", "0"), "positive whole numbers")
    assert_one_line_error(cli("profile", setup["model"], "--repeats", 0), "--repeats 0")
    junk = tmp_path / "junk.pt"
    junk.write_text("no")
    assert_one_line_error(cli("profile", junk), "not a branchnet model")
    assert list(tmp_path.iterdir()) == [junk]


class _Chain(torch.nn.Module):
    """Live storages: a (x-sized) and b at once, then a view of b, then c; a dies before c."""

    def forward(self, x):
        a = x * 2
        b = a + 1
        del a
        v = b.view(-1)  # shares b's storage: no new bytes
        c = v.relu()  # a new storage while b lives
        del b, v
        return c.sum()


def test_live_bytes_counts_what_is_alive_at_once():
    from branchnet.deploy.profile import LiveBytes, memory_peak

    x = torch.randn(4, 3, 8, 8)
    size = x.numel() * x.element_size()
    tracker = LiveBytes([x])
    with torch.inference_mode(), tracker:
        _Chain()(x)
    assert tracker.peak == 2 * size  # {a, b}, then {b, c}: never three maps
    assert tracker.current == 0  # everything was freed, the discarded result too
    lin = torch.nn.Linear(12, 5)
    memory = memory_peak(lin, torch.randn(7, 12))
    assert memory["weights_bytes"] == (12 * 5 + 5) * 4
    assert memory["activations_bytes"] == 7 * 5 * 4  # the output, nothing else (weights are not counted)

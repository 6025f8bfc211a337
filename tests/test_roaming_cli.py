"""Maximum Roaming from the command line: `branchnet train --set train.roaming...`, the saved
model keeps its masks, bad input is one line, and two gloo ranks draw the same masks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from branchnet.config import load_config
from branchnet.data import build_dataset
from branchnet.model_file import load_model
from branchnet.train.evaluate import evaluate
from branchnet.train.loaders import make_loader
from branchnet.train.roaming import RoamingPlan, roaming_layers, update_period
from conftest import TINY_CONFIG, assert_one_line_error, fresh_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache):
    """A tiny two-task config (32 training images: 2 steps per epoch) and its single-task models."""
    from branchnet.steps.train_single import train_single

    base = tmp_path_factory.mktemp("roaming")
    config = base / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(root=data_cache, tasks="[seg, depth]").replace("train: 48", "train: 32"))
    runs = base / "runs"
    train_single(load_config(config), runs, quiet=True)
    return config, runs


def test_train_with_roaming_saves_a_model_that_evaluates_as_trained(cli, trained, tmp_path):
    runs = fresh_runs(trained, tmp_path)
    done = cli("train", "--config", trained[0], "--runs", runs, "--tree", "shared",
               "--set", "train.roaming={p: 0.5, delta: 0.5}")
    assert done.code == 0, done.err
    metrics = json.loads((runs / "branched" / "shared" / "metrics.json").read_text())
    roaming = metrics["roaming"]
    assert roaming["p"] == 0.5 and roaming["delta"] == 0.5 and roaming["completion"] == 1.0
    assert roaming["node_passes"] == 8 and roaming["node_passes_plain"] == 4  # one pass per task and stage
    assert [h["roaming"]["steps"] for h in metrics["history"]] == [2, 4]  # an update after every step
    record = json.loads((runs / "branched" / "shared" / "run.json").read_text())
    assert record["fingerprint"]["settings"]["train"]["roaming"] == {"p": 0.5, "delta": 0.5, "completion": 1.0}
    # the model file keeps the masks and every task's BatchNorm statistics: it scores what training scored
    loaded = load_model(runs / "branched" / "shared" / "model.pt")
    assert loaded.model.channel_masks is not None and loaded.model.channel_masks.active
    config = load_config(trained[0])
    loader = make_loader(build_dataset(config, "test"), 16, 0, train=False, device=torch.device("cpu"))
    again = evaluate(loaded.model, loaded.tasks, loader, torch.device("cpu"))
    assert again == metrics["test"]
    # a single-task fingerprint ignores roaming: the baselines above served this network
    assert metrics["delta_mtl"]["protocol"] == "fair"


def test_a_tree_without_shared_nodes_needs_allow_plain(cli, trained, tmp_path):
    runs = fresh_runs(trained, tmp_path)
    refused = cli("train", "--config", trained[0], "--runs", runs, "--tree", "separate",
                  "--set", "train.roaming.p=0.5")
    assert_one_line_error(refused, "train.roaming needs an encoder node shared by two or more tasks", "--allow-plain")
    assert not (runs / "branched").exists()
    done = cli("train", "--config", trained[0], "--runs", runs, "--tree", "separate",
               "--set", "train.roaming.p=0.5", "--allow-plain")
    assert done.code == 0, done.err
    record = json.loads((runs / "branched" / "separate" / "run.json").read_text())
    assert record["fingerprint"]["settings"]["train"]["roaming"] is None  # trained, and recorded, plainly
    assert json.loads((runs / "branched" / "separate" / "metrics.json").read_text())["roaming"] is None


@pytest.mark.parametrize("setting, fragments", [
    ("train.roaming.p=1.5", ["train.roaming.p", "[0, 1]", "1.5"]),
    ("train.roaming.p=-0.1", ["train.roaming.p", "[0, 1]"]),
    ("train.roaming.delta=0", ["train.roaming.delta", "positive"]),
    ("train.roaming={p: 0.5, delta: -1}", ["train.roaming.delta", "positive"]),
    ("train.roaming.completion=0", ["train.roaming.completion", "(0, 1]"]),
    ("train.roaming.rate=2", ["unknown key 'train.roaming.rate'"]),
])
def test_bad_roaming_settings_are_one_line(cli, trained, tmp_path, setting, fragments):
    result = cli("train", "--config", trained[0], "--runs", tmp_path / "runs", "--tree", "shared", "--set", setting)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists()


def test_two_gloo_ranks_draw_the_same_masks(trained, tmp_path):
    """torchrun, 2 CPU processes, batch 8 each: the global batch and the steps of one process
    with batch 16. Each epoch end checks that both ranks hold the same plan (a digest
    all-reduced); the saved masks are the plan drawn in one process for the same steps."""
    runs = fresh_runs(trained, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "BRANCHNET_QUIET": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "branchnet", "train", "--config", str(trained[0]), "--runs", str(runs), "--tree", "shared",
               "--batch-size", "8", "--set", "train.roaming={p: 0.5, delta: 0.5}",
               "--baselines", str(runs)]  # per-rank batch 8: the baselines trained with 16
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((runs / "branched" / "shared" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["history"][-1]["roaming"]["steps"] == 4
    model = load_model(runs / "branched" / "shared" / "model.pt").model
    plan = RoamingPlan(roaming_layers(model), 0.5, 1.0, seed=0)
    for _ in range(4):
        plan.step()
    for layer, used in zip(plan.layers, plan.used):
        saved = model.channel_masks.nodes[layer.key].mask(layer.point).numpy() > 0.5
        assert np.array_equal(saved, used)
    assert update_period(0.5, 2) == 1

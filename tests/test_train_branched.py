"""`branchnet train` and `branchnet run`: metrics and delta against their definitions,
the three kinds of tree, bad trees, loss weightings, torchrun, and the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from branchnet.nn.backbones import NUM_STAGES
from branchnet.nn.model_file import load_model
from branchnet.config import load_config
from branchnet.tree import make_tree, save_tree
from conftest import TINY_CONFIG, assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("seg", "depth", "count")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache):
    """A tiny config and a runs directory holding its three single-task models."""
    from branchnet.steps.train_single import train_single

    base = tmp_path_factory.mktemp("branched")
    config = base / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(root=data_cache, tasks="[" + ", ".join(TASKS) + "]"))
    runs = base / "runs"
    train_single(load_config(config), runs, quiet=True)
    return config, runs


def fresh_runs(trained, tmp_path) -> Path:
    """A copy of the single-task runs, so each test writes its own branched runs."""
    runs = tmp_path / "runs"
    shutil.copytree(trained[1] / "single", runs / "single")
    return runs


def read_metrics(runs: Path, name: str) -> dict:
    return json.loads((runs / "branched" / name / "metrics.json").read_text())


def expected_delta(metrics: dict, runs: Path, split: str = "test") -> float:
    """Survey Eq. 10 from the files: mean over tasks of (-1)^l (M - B) / B, in percent."""
    terms = []
    for task, info in metrics["tasks"].items():
        single = json.loads((runs / "single" / task / "metrics.json").read_text())
        main = info["main_metric"]
        m, b = metrics[split][task][main], single[split][task][main]
        terms.append((1 if info["higher_is_better"] else -1) * (m - b) / b * 100)
    return float(np.mean(terms))


@pytest.mark.parametrize("tree", ["shared", "separate"])
def test_train_the_two_ends(cli, trained, tmp_path, tree):
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    result = cli("train", "--config", config, "--runs", runs, "--tree", tree)
    assert result.code == 0, result.err
    metrics = read_metrics(runs, tree)
    groups = [len(p) for p in metrics["partitions"]]
    assert groups == ([1] * NUM_STAGES if tree == "shared" else [len(TASKS)] * NUM_STAGES)
    for split in ("val", "test"):
        assert metrics["delta_mtl"][split]["delta_mtl"] == pytest.approx(expected_delta(metrics, runs, split))
        assert set(metrics[split]) == set(TASKS)
    loaded = load_model(runs / "branched" / tree / "model.pt")
    assert sum(p.numel() for p in loaded.model.parameters()) == metrics["params"]
    assert len(metrics["history"]) == 2
    assert not (runs / "branched" / tree / "checkpoint.pt").exists()
    if tree == "separate":  # separate = the single-task networks side by side
        singles = sum(json.loads((runs / "single" / t / "metrics.json").read_text())["params"] for t in TASKS)
        assert metrics["params"] == singles


def test_train_a_built_tree_json(cli, trained, tmp_path):
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    single = json.loads((runs / "single" / "seg" / "metrics.json").read_text())
    heads = [json.loads((runs / "single" / t / "metrics.json").read_text())["head_params"][t] for t in TASKS]
    partitions = [[list(TASKS)], [list(TASKS)], [["seg", "depth"], ["count"]], [["seg"], ["depth"], ["count"]]]
    affinity = np.ones((NUM_STAGES, 3, 3))
    tree = make_tree(partitions, list(TASKS), single["locations"], affinity, single["stage_params"], heads,
                     backbone="resnet18")
    save_tree(tmp_path / "tree.json", tree)
    result = cli("train", "--config", config, "--runs", runs, "--tree", tmp_path / "tree.json", "--init", "average")
    assert result.code == 0, result.err
    metrics = read_metrics(runs, "tree")
    assert metrics["params"] == tree.params
    assert metrics["partitions"] == tree.partitions and metrics["init"] == "average"
    assert metrics["delta_mtl"]["test"]["delta_mtl"] == pytest.approx(expected_delta(metrics, runs))


def write_tree(path: Path, **changes) -> Path:
    tree = {"tasks": list(TASKS), "locations": ["layer1", "layer2", "layer3", "layer4"],
            "partitions": [[list(TASKS)]] * NUM_STAGES, "params": None, "flops": None,
            "dissimilarity": 0.0, "backbone": "resnet18"}
    tree.update(changes)
    path.write_text(json.dumps(tree))
    return path


@pytest.mark.parametrize("changes, fragments", [
    ({"tasks": ["seg", "depth", "edges"], "partitions": [[["seg", "depth", "edges"]]] * NUM_STAGES},
     ["edges", "count"]),
    ({"locations": ["a", "b", "c"], "partitions": [[list(TASKS)]] * 3}, ["3 levels", "4 stages"]),
    ({"backbone": "resnet50"}, ["resnet50", "resnet18"]),
    ({"params": 123}, ["123", "parameters"]),
])
def test_bad_trees_are_refused(cli, trained, tmp_path, changes, fragments):
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    path = write_tree(tmp_path / "bad.json", **changes)
    assert_one_line_error(cli("train", "--config", config, "--runs", runs, "--tree", path), *fragments)
    assert not (runs / "branched" / "bad" / "metrics.json").exists()


def test_tree_spec_that_is_neither_file_nor_end(cli, trained, tmp_path):
    assert_one_line_error(cli("train", "--config", trained[0], "--runs", fresh_runs(trained, tmp_path),
                              "--tree", "sharde"), "sharde", "shared, separate")


def test_missing_single_task_metrics_are_named(cli, trained, tmp_path):
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    shutil.rmtree(runs / "single" / "depth")
    assert_one_line_error(cli("train", "--config", config, "--runs", runs, "--tree", "shared"),
                          "depth", "train-single")
    assert not (runs / "branched").exists() or not any((runs / "branched").rglob("metrics.json"))


@pytest.mark.parametrize("weighting", ["uncertainty", "dwa", "gradnorm"])
def test_weightings_train_and_log_their_weights(cli, trained, tmp_path, weighting):
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    result = cli("train", "--config", config, "--runs", runs, "--tree", "shared", "--weighting", weighting,
                 "--epochs", "3", "--name", weighting)
    assert result.code == 0, result.err
    metrics = read_metrics(runs, weighting)
    assert metrics["weighting"] == weighting
    weights = [h["weights"] for h in metrics["history"]]
    assert all(np.isfinite(list(w.values())).all() for w in weights)
    if weighting in ("dwa", "gradnorm"):  # both keep the weights summing to the number of tasks
        assert sum(weights[-1].values()) == pytest.approx(len(TASKS), rel=1e-5)
    if weighting == "dwa":
        # w_i(t) = N softmax(r_i / T), r_i = L_i(t-1) / L_i(t-2), T = 2; history[e] logs the
        # weights set at the end of epoch e (those of epoch e + 1); 1 until two epochs are seen
        assert np.allclose(list(weights[0].values()), 1.0)
        losses = [metrics["history"][e]["train_loss"] for e in range(3)]
        for e in (1, 2):
            rates = np.array([losses[e][t] / losses[e - 1][t] for t in TASKS])
            expected = len(TASKS) * np.exp(rates / 2) / np.exp(rates / 2).sum()
            assert np.allclose([weights[e][t] for t in TASKS], expected, rtol=1e-5)
    assert not np.allclose(list(weights[-1].values()), 1.0) or weighting == "uncertainty"


def test_gradnorm_needs_a_shared_layer(cli, trained, tmp_path):
    assert_one_line_error(cli("train", "--config", trained[0], "--runs", fresh_runs(trained, tmp_path),
                              "--tree", "separate", "--weighting", "gradnorm"), "gradnorm", "uniform")


def test_train_under_torchrun_with_two_cpu_processes(trained, tmp_path):
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "BRANCHNET_QUIET": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "branchnet", "train", "--config", str(config), "--runs", str(runs), "--tree", "shared",
               "--batch-size", "8"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(runs, "shared")
    assert metrics["world_size"] == 2 and len(metrics["history"]) == 2
    assert metrics["delta_mtl"]["test"]["delta_mtl"] == pytest.approx(expected_delta(metrics, runs))
    loaded = load_model(runs / "branched" / "shared" / "model.pt")
    assert sum(p.numel() for p in loaded.model.parameters()) == metrics["params"]
    with torch.no_grad():
        out = loaded.model.eval()(torch.zeros(2, 3, 32, 32))
    assert set(out) == set(TASKS) and out["seg"].shape[-2:] == (32, 32)


def test_run_end_to_end_writes_the_report(cli, trained, tmp_path):
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)  # single-task models already there: run keeps them
    before = {t: (runs / "single" / t / "model.pt").stat().st_mtime_ns for t in TASKS}
    shared = json.loads((trained[1] / "single" / "seg" / "metrics.json").read_text())
    heads = sum(json.loads((runs / "single" / t / "metrics.json").read_text())["head_params"][t] for t in TASKS)
    budget = sum(shared["stage_params"][:2]) + 2 * sum(shared["stage_params"][2:]) + heads
    result = cli("run", "--config", config, "--runs", runs, "--params", str(budget))
    assert result.code == 0, result.err
    assert before == {t: (runs / "single" / t / "model.pt").stat().st_mtime_ns for t in TASKS}
    report = json.loads((runs / "report.json").read_text())
    rows = {row["network"]: row for row in report["networks"]}
    assert set(rows) == {"single-task models", "branched (tree.json)", "all-shared", "all-separate"}
    tree = json.loads((runs / "tree.json").read_text())
    assert tree["params"] <= budget and rows["branched (tree.json)"]["params"] == tree["params"]
    for name, metrics_name in (("all-shared", "shared"), ("all-separate", "separate"), ("branched (tree.json)", "tree")):
        metrics = read_metrics(runs, metrics_name)
        assert rows[name]["delta_mtl"] == pytest.approx(expected_delta(metrics, runs))
    for key in ("affinity", "heatmaps", "tree_png", "plot"):
        assert Path(report["files"][key]).is_file(), key
    markdown = (runs / "report.md").read_text()
    assert "```mermaid" in markdown and "all-separate" in markdown and "Δ_MTL" in markdown
    # a second run keeps everything and rewrites the same report
    again = cli("run", "--config", config, "--runs", runs, "--params", str(budget))
    assert again.code == 0, again.err
    assert json.loads((runs / "report.json").read_text())["networks"] == report["networks"]


def test_run_with_a_budget_below_the_all_shared_network(cli, trained, tmp_path):
    runs = tmp_path / "runs"
    assert_one_line_error(cli("run", "--config", trained[0], "--runs", runs, "--params", "1K"),
                          "all-shared", "at least")
    assert not (runs / "single").exists()


def test_separate_tree_from_random_init_reproduces_the_single_task_models(cli, trained, tmp_path):
    """Same encoder start, same head start (per-task head seeds), same batches, independent
    gradients: the all-separate network trains into the single-task models."""
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    result = cli("train", "--config", config, "--runs", runs, "--tree", "separate", "--init", "random")
    assert result.code == 0, result.err
    metrics = read_metrics(runs, "separate")
    for task in TASKS:
        single = json.loads((runs / "single" / task / "metrics.json").read_text())
        for split in ("val", "test"):
            for name, value in single[split][task].items():
                assert metrics[split][task][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (task, split, name)
    assert abs(metrics["delta_mtl"]["test"]["delta_mtl"]) < 1e-2

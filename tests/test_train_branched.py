"""`branchnet train` and `branchnet run`: metrics and delta against their definitions,
the three kinds of tree, bad trees, loss weightings, torchrun, and the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from branchnet.nn.backbones import NUM_STAGES
from branchnet.model_file import load_model
from branchnet.config import load_config
from branchnet.tree import make_tree, save_tree
from branchnet.units import format_count
from conftest import TINY_CONFIG, assert_one_line_error, fresh_runs

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
    # three epochs against the two-epoch baselines: named explicitly, as the reuse rule asks
    result = cli("train", "--config", config, "--runs", runs, "--tree", "shared", "--weighting", weighting,
                 "--epochs", "3", "--name", weighting, "--baselines", runs)
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


def test_a_hand_written_tree_trains_end_to_end(cli, trained, tmp_path):
    """Only tasks, locations and partitions: no params, no dissimilarity (once a NaN that made
    writing metrics.json fail after the training)."""
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"tasks": list(TASKS), "locations": ["layer1", "layer2", "layer3", "layer4"],
                                "partitions": [[list(TASKS)], [list(TASKS)], [["seg", "depth"], ["count"]],
                                               [["seg", "depth"], ["count"]]]}))
    result = cli("train", "--config", config, "--runs", runs, "--tree", path)
    assert result.code == 0, result.err
    metrics = read_metrics(runs, "mine")
    assert metrics["tree"]["dissimilarity"] is None and metrics["partitions"][2] == [["seg", "depth"], ["count"]]
    assert metrics["delta_mtl"]["protocol"] == "fair" and metrics["delta_mtl"]["notes"] == []
    assert (runs / "branched" / "mine" / "run.json").is_file()
    assert not (runs / "branched" / "mine" / "checkpoint.pt").exists()
    # the same tree again: kept; another init: refused, naming it
    stamp = (runs / "branched" / "mine" / "model.pt").stat().st_mtime_ns
    assert cli("train", "--config", config, "--runs", runs, "--tree", path).code == 0
    assert (runs / "branched" / "mine" / "model.pt").stat().st_mtime_ns == stamp
    assert_one_line_error(cli("train", "--config", config, "--runs", runs, "--tree", path, "--init", "first"),
                          "branched/mine", "init 'random' -> 'first'", "--force")


def test_init_from_single_weights_is_said_beside_every_delta(cli, trained, tmp_path):
    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    result = cli("train", "--config", config, "--runs", runs, "--tree", "separate", "--init", "first")
    assert result.code == 0, result.err
    delta = read_metrics(runs, "separate")["delta_mtl"]
    assert delta["protocol"] == "init-from-single"
    assert "trained longer than their baselines" in delta["notes"][0]
    assert delta["baselines"]["matched"] is True


def test_the_model_is_saved_before_its_metadata(cli, trained, tmp_path, monkeypatch):
    """A failure while writing metrics.json after the training keeps model.pt, and the network
    is not committed (no run.json), so it is never reused as finished."""
    import branchnet.steps.commit as runs_module

    config, _ = trained
    runs = fresh_runs(trained, tmp_path)
    real = runs_module.atomic_write_json

    def failing(path, obj, *args, **kwargs):
        if Path(path).name == "metrics.json":
            raise OSError(28, "No space left on device")
        return real(path, obj, *args, **kwargs)

    monkeypatch.setattr(runs_module, "atomic_write_json", failing)
    with pytest.raises(OSError):
        from branchnet.steps.train_branched import train_branched
        train_branched(load_config(config), runs, "shared", quiet=True)
    directory = runs / "branched" / "shared"
    assert (directory / "model.pt").is_file() and not (directory / "run.json").exists()
    assert load_model(directory / "model.pt").model.task_names == list(TASKS)


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
    tree_name = f"tree-{format_count(budget, digits=6)}"  # the budget's tree has its own directory
    assert set(rows) == {"single-task models", f"branched ({tree_name})", "all-shared", "all-separate"}
    tree = json.loads((runs / "tree.json").read_text())
    assert tree["params"] <= budget and rows[f"branched ({tree_name})"]["params"] == tree["params"]
    for name, metrics_name in (("all-shared", "shared"), ("all-separate", "separate"),
                               (f"branched ({tree_name})", tree_name)):
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

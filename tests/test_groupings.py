"""``branchnet groupings``: the candidates CSV from trained group networks, its costs, ESA, HOA, trees."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import shutil

import pytest

from branchnet.nn.backbones import NUM_STAGES
from branchnet.config import load_config
from branchnet.data import build_tasks
from branchnet.nn.branched import BranchedNet
from branchnet.tree import shared_partitions
from branchnet.selection import read_candidates, select_networks
from conftest import TINY_CONFIG, assert_one_line_error


def write_config(directory, root, tasks, epochs=1):
    text = TINY_CONFIG.format(root=root, tasks="[" + ", ".join(tasks) + "]").replace("epochs: 2", f"epochs: {epochs}")
    path = directory / "tiny.yaml"
    path.write_text(text)
    return path


@functools.lru_cache(maxsize=None)
def _direct_flops(config_path, group, width):
    config = load_config(config_path, overrides={"model.width": load_config(config_path).model.width * width})
    tasks = {t.name: t for t in build_tasks(config)}
    model = BranchedNet([tasks[t] for t in group], shared_partitions(list(group), NUM_STAGES), config.model,
                        config.image_size)
    return model.costs()["flops"]


def direct_flops(config_path, group, width=1.0):
    """FLOPs of the group's all-shared network at ``width``, built directly (BranchedNet.costs)."""
    return _direct_flops(str(config_path), tuple(group), float(width))


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory, data_cache):
    """seg and depth: every group at width 1 and the half-width singles, one epoch each."""
    from branchnet.cli import main

    directory = tmp_path_factory.mktemp("groupings2")
    config = write_config(directory, data_cache, ["seg", "depth"])
    runs = directory / "runs"
    assert main(["groupings", "--config", str(config), "--runs", str(runs), "--widths", "1,0.5", "-q"]) == 0
    return config, runs


def test_csv_has_a_row_per_group_and_width_with_the_right_empty_cells(two_tasks):
    _, runs = two_tasks
    rows = read_rows(runs / "groupings" / "candidates.csv")
    assert rows[0] == ["name", "cost", "seg", "depth"]
    names = [r[0] for r in rows[1:]]
    assert names == ["seg", "depth", "seg+depth", "seg@0.5", "depth@0.5"]  # 2^2 - 1 groups + 2 half-width
    solved = {r[0]: [bool(cell) for cell in r[2:]] for r in rows[1:]}
    assert solved == {"seg": [True, False], "depth": [False, True], "seg+depth": [True, True],
                      "seg@0.5": [True, False], "depth@0.5": [False, True]}


def test_losses_are_the_networks_validation_losses(two_tasks):
    _, runs = two_tasks
    table = read_candidates(runs / "groupings" / "candidates.csv")
    for cand in table.candidates:
        metrics = json.loads((runs / "groupings" / cand.name / "metrics.json").read_text())
        assert cand.losses == {t: metrics["val"][t]["loss"] for t in metrics["group"]}
        assert metrics["width"] == (0.5 if "@" in cand.name else 1.0)


def test_costs_are_flops_relative_to_the_mean_full_width_single_network(two_tasks):
    config, runs = two_tasks
    table = read_candidates(runs / "groupings" / "candidates.csv")
    reference = (direct_flops(config, ["seg"]) + direct_flops(config, ["depth"])) / 2
    for cand in table.candidates:
        width = 0.5 if cand.name.endswith("@0.5") else 1.0
        assert cand.cost == pytest.approx(direct_flops(config, cand.tasks, width) / reference, rel=1e-12)
        metrics = json.loads((runs / "groupings" / cand.name / "metrics.json").read_text())
        assert metrics["flops"] == direct_flops(config, cand.tasks, width)
    singles = [c.cost for c in table.candidates if c.name in ("seg", "depth")]
    assert math.fsum(singles) == pytest.approx(2.0, abs=1e-12)  # the single-task networks cost |T| in all
    assert table.candidate("seg@0.5").cost < 0.75 * table.candidate("seg").cost


def test_companion_json_has_test_metrics_of_every_network(two_tasks):
    _, runs = two_tasks
    document = json.loads((runs / "groupings" / "candidates.json").read_text())
    table = read_candidates(runs / "groupings" / "candidates.csv")
    assert [row["name"] for row in document["candidates"]] == list(table.names)
    for row in document["candidates"]:
        metrics = json.loads((runs / "groupings" / row["name"] / "metrics.json").read_text())
        assert row["test"] == {t: metrics["test"][t] for t in row["tasks"]}
        assert row["val"] == {t: metrics["val"][t] for t in row["tasks"]}
        assert row["cost"] == table.candidate(row["name"]).cost
        assert row["kind"] == "trained" and set(row["test"]["seg" if "seg" in row["tasks"] else "depth"]) >= {"loss"}


def test_select_runs_on_the_written_csv(cli, two_tasks):
    _, runs = two_tasks
    path = runs / "groupings" / "candidates.csv"
    result = cli("select", "--candidates", path, "--budget", "2.5", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == select_networks(read_candidates(path), 2.5).to_json()
    sweep = cli("select", "--candidates", path, "--sweep", "1.5:2:0.5")
    assert sweep.code == 0, sweep.err


def test_rerun_skips_trained_networks_and_force_retrains(cli, two_tasks, tmp_path):
    config, runs = two_tasks
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in (copy / "groupings").glob("*/model.pt")}
    result = cli("groupings", "--config", config, "--runs", copy, "--widths", "1,0.5")
    assert result.code == 0, result.err
    assert {p.parent.name: p.stat().st_mtime_ns for p in (copy / "groupings").glob("*/model.pt")} == stamps
    assert "skipped" in result.out and "candidates.csv" in result.out and "branchnet select" in result.out
    assert read_candidates(copy / "groupings" / "candidates.csv") == read_candidates(runs / "groupings" / "candidates.csv")

    # other settings: refused in one line, nothing rewritten
    csv_stamp = (copy / "groupings" / "candidates.csv").stat().st_mtime_ns
    refused = cli("groupings", "--config", config, "--runs", copy, "--fraction", "0.5")
    assert_one_line_error(refused, "other settings", "fraction", "--force")
    assert (copy / "groupings" / "candidates.csv").stat().st_mtime_ns == csv_stamp

    forced = cli("groupings", "--config", config, "--runs", copy, "--task", "seg", "--force", "--fraction", "0.5")
    assert forced.code == 0, forced.err
    assert (copy / "groupings" / "seg" / "model.pt").stat().st_mtime_ns != stamps["seg"]
    assert [r[0] for r in read_rows(copy / "groupings" / "candidates.csv")] == ["name", "seg"]


def test_add_tree_adds_a_row_priced_like_the_groupings(cli, two_tasks, tmp_path):
    config, runs = two_tasks
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    # a branched network's metrics.json (the format `branchnet train` writes): here the all-shared tree
    shared = json.loads((copy / "groupings" / "seg+depth" / "metrics.json").read_text())
    tree_dir = copy / "branched" / "mytree"
    tree_dir.mkdir(parents=True)
    (tree_dir / "metrics.json").write_text(json.dumps({**shared, "name": "mytree"}))
    result = cli("groupings", "--config", config, "--runs", copy, "--widths", "1,0.5",
                 "--add-tree", tree_dir / "metrics.json")
    assert result.code == 0, result.err
    table = read_candidates(copy / "groupings" / "candidates.csv")
    assert table.names[-1] == "branched/mytree"
    tree, group = table.candidate("branched/mytree"), table.candidate("seg+depth")
    assert tree.cost == pytest.approx(group.cost, rel=1e-12) and tree.losses == group.losses
    document = json.loads((copy / "groupings" / "candidates.json").read_text())
    assert document["candidates"][-1]["kind"] == "tree"


def test_fraction_trains_that_share_of_the_steps(tmp_path, data_cache, monkeypatch):
    import branchnet.train.engine as engine
    from branchnet.steps.groupings import train_groupings

    steps = []
    real = engine.lr_multiplier

    def counting(step, total, schedule):
        steps.append((step, total))
        return real(step, total, schedule)

    monkeypatch.setattr(engine, "lr_multiplier", counting)
    config = load_config(write_config(tmp_path, data_cache, ["depth"], epochs=3))  # 3 epochs x 3 batches
    table = train_groupings(config, tmp_path / "runs", fraction=0.4, quiet=True)
    assert table.names == ("depth",)
    # round(0.4 x 9) = 4 steps: 2 epochs of 2 batches over a fixed subset of 32 images
    assert sorted({s for s, _ in steps}) == [0, 1, 2, 3] and {t for _, t in steps} == {4}
    metrics = json.loads((tmp_path / "runs" / "groupings" / "depth" / "metrics.json").read_text())
    assert (metrics["steps"], metrics["full_steps"], metrics["train_images"], metrics["epochs"]) == (4, 9, 32, 2)


def test_higher_order_rows_are_the_mean_of_the_pair_losses(cli, tmp_path, data_cache):
    config = write_config(tmp_path, data_cache, ["seg", "depth", "normals"])
    runs = tmp_path / "runs"
    result = cli("groupings", "--config", config, "--runs", runs, "--predict-higher-order", "--fraction", "0.34")
    assert result.code == 0, result.err
    table = read_candidates(runs / "groupings" / "candidates.csv")
    assert table.names == ("seg", "depth", "normals", "seg+depth", "seg+normals", "depth+normals",
                           "seg+depth+normals")
    assert not (runs / "groupings" / "seg+depth+normals").exists()  # predicted, not trained
    predicted = table.candidate("seg+depth+normals")
    for task in ("seg", "depth", "normals"):
        pairs = [table.candidate("+".join(p)) for p in itertools.combinations(("seg", "depth", "normals"), 2)
                 if task in p]
        assert predicted.losses[task] == pytest.approx(sum(p.losses[task] for p in pairs) / 2, rel=1e-12)
    reference = sum(direct_flops(config, [t]) for t in ("seg", "depth", "normals")) / 3
    assert predicted.cost == pytest.approx(direct_flops(config, ["seg", "depth", "normals"]) / reference, rel=1e-12)
    row = json.loads((runs / "groupings" / "candidates.json").read_text())["candidates"][-1]
    assert row["kind"] == "predicted" and row["test"] is None
    assert row["predicted_from"] == ["seg+depth", "seg+normals", "depth+normals"]


def test_resume_continues_an_interrupted_network(tmp_path, data_cache, monkeypatch):
    import branchnet.train.engine as engine
    from branchnet.steps.groupings import train_groupings

    config = load_config(write_config(tmp_path, data_cache, ["depth"], epochs=2))
    full = train_groupings(config, tmp_path / "full", quiet=True)

    real_save = engine.atomic_torch_save

    def save_then_die(path, obj):
        real_save(path, obj)
        raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_groupings(config, tmp_path / "killed", quiet=True)
    monkeypatch.setattr(engine, "atomic_torch_save", real_save)
    assert (tmp_path / "killed" / "groupings" / "depth" / "checkpoint.pt").is_file()
    resumed = train_groupings(config, tmp_path / "killed", resume=True, quiet=True)
    assert resumed == full
    assert not (tmp_path / "killed" / "groupings" / "depth" / "checkpoint.pt").exists()


# ---------------------------------------------------------------------------------------- bad input


@pytest.fixture
def tiny3(tmp_path, data_cache):
    return write_config(tmp_path, data_cache, ["seg", "depth"])


@pytest.mark.parametrize("args, fragments", [
    (["--max-size", "0"], ["--max-size 0", "from 1 to 2"]),
    (["--max-size", "3"], ["--max-size 3", "from 1 to 2"]),
    (["--fraction", "0"], ["--fraction 0", "(0, 1]"]),
    (["--fraction", "1.5"], ["--fraction 1.5", "(0, 1]"]),
    (["--fraction", "-0.2"], ["--fraction -0.2", "(0, 1]"]),
    (["--fraction", "nan"], ["--fraction nan"]),
    (["--fraction", "abc"], ["--fraction"]),
    (["--widths", "1,abc"], ["--widths", "'abc' is not a number"]),
    (["--widths", "1,0"], ["--widths", "not in (0, 1]"]),
    (["--widths", "1,-0.5"], ["--widths", "not in (0, 1]"]),
    (["--widths", "1,1.5"], ["--widths", "not in (0, 1]"]),
    (["--widths", "1,0.5,0.5"], ["--widths", "0.5 twice"]),
    (["--widths", "1,"], ["--widths", "comma-separated"]),
    (["--widths", "0.5"], ["--widths", "must include 1"]),
    (["--widths-for", "pairs"], ["--widths-for", "singles, all"]),
    (["--predict-higher-order"], ["--predict-higher-order", "3 or more"]),
    (["--task", "normals"], ["unknown task of this config 'normals'"]),
    (["--task", "seg", "--task", "seg"], ["twice"]),
    (["--add-tree", "nowhere/metrics.json"], ["--add-tree", "does not exist"]),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, tiny3, tmp_path, args, fragments):
    runs = tmp_path / "runs"
    result = cli("groupings", "--config", tiny3, "--runs", runs, *args)
    assert_one_line_error(result, *fragments)
    assert not runs.exists()


def test_add_tree_from_other_tasks_or_encoder_is_refused(cli, tiny3, tmp_path):
    metrics = {"tasks": {"seg": {}, "normals": {}}, "val": {"seg": {"loss": 1.0}, "normals": {"loss": 1.0}},
               "flops": 1000, "partitions": [[["seg", "normals"]]] * 4, "params": 10}
    path = tmp_path / "branched" / "other" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    runs = tmp_path / "runs"
    result = cli("groupings", "--config", tiny3, "--runs", runs, "--add-tree", path)
    assert_one_line_error(result, "--add-tree", "seg, normals", "seg, depth")
    path.write_text(json.dumps({**metrics, "tasks": {"seg": {}, "depth": {}}, "stage_flops": [1, 2, 3, 4],
                                "val": {"seg": {"loss": 1.0}, "depth": {"loss": 1.0}}}))
    assert_one_line_error(cli("groupings", "--config", tiny3, "--runs", runs, "--add-tree", path),
                          "another encoder")
    path.write_text("{not json")
    assert_one_line_error(cli("groupings", "--config", tiny3, "--runs", runs, "--add-tree", path), "not valid JSON")
    assert not runs.exists()


def test_other_width_with_hrnet_is_one_line(cli, tmp_path, data_cache):
    config = write_config(tmp_path, data_cache, ["seg"])
    text = config.read_text().replace("backbone: resnet18, width: 0.125, output_stride: 8", "backbone: hrnet_w18_small")
    config.write_text(text)
    runs = tmp_path / "runs"
    result = cli("groupings", "--config", config, "--runs", runs, "--widths", "1,0.5")
    assert_one_line_error(result, "--widths 0.5", "ResNet backbones only", "hrnet")
    assert not runs.exists()

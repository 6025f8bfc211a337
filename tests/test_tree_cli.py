"""``branchnet build`` on the command line: output, files, and one-line errors for bad input."""

import json

import numpy as np
import pytest

from branchnet.affinity import AffinityData, save_affinity
from branchnet.tree import load_tree, tree_params
from conftest import assert_one_line_error

TASKS = ["seg", "depth", "normals", "edge", "sal"]
LOCATIONS = ["layer1", "layer2", "layer3", "layer4"]
STAGE = np.array([200_000, 1_200_000, 7_100_000, 15_000_000])
HEAD = np.array([500_000] * 5)
SHARED = int(STAGE.sum() + HEAD.sum())  # 26M


def affinity(rng=None):
    rng = rng or np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(4, 5, 5))
    a = (a + a.transpose(0, 2, 1)) / 2
    for d in range(4):
        np.fill_diagonal(a[d], 1.0)
    return a


@pytest.fixture
def aff_file(tmp_path):
    path = tmp_path / "run" / "affinity.npz"
    path.parent.mkdir()
    save_affinity(path, AffinityData(affinity(), TASKS, LOCATIONS, stage_params=STAGE, head_params=HEAD,
                                     stage_flops=np.array([1e9] * 4), head_flops=np.array([1e8] * 5)))
    return path


def test_build_writes_tree_beside_the_affinity(cli, aff_file):
    result = cli("build", "--affinity", aff_file, "--params", "60M")
    assert result.code == 0, result.err
    tree = load_tree(aff_file.parent / "tree.json")
    assert tree.params <= 60e6 and tree.method == "exact"
    assert tree.params == tree_params(tree.partitions, TASKS, STAGE, HEAD)
    assert tree.budget == {"params": 60_000_000, "flops": None}
    for fragment in ("input", "layer1", "head", "dissimilarity", "all-shared", "all-separate", "26M", "120M"):
        assert fragment in result.out
    assert cli("build", "--affinity", aff_file, "--params", "60M", "--exact", "--json").code == 0


def test_build_json_prints_only_tree_json(cli, aff_file, tmp_path):
    out = tmp_path / "elsewhere" / "t.json"
    result = cli("build", "--affinity", aff_file, "--params", "60M", "--flops", "9G", "--json", "--out", out)
    assert result.code == 0, result.err
    printed = json.loads(result.out)  # stdout is exactly one JSON document
    assert printed == json.loads(out.read_text())
    assert printed["flops"] <= 9e9 and printed["budget"] == {"params": 60_000_000, "flops": 9_000_000_000}
    assert not (aff_file.parent / "tree.json").exists()


def test_build_sweep(cli, aff_file):
    result = cli("build", "--affinity", aff_file, "--sweep")
    assert result.code == 0, result.err
    assert "optimal trees" in result.out and (aff_file.parent / "sweep.png").is_file()
    result = cli("build", "--affinity", aff_file, "--sweep", "--json")
    path = json.loads(result.out)
    assert path[0]["params"] == SHARED and path[-1]["dissimilarity"] == 0.0
    assert [p["params"] for p in path] == sorted(p["params"] for p in path)


def test_build_above_all_separate_has_a_note(cli, aff_file):
    result = cli("build", "--affinity", aff_file, "--params", "1G")
    assert result.code == 0 and "note:" in result.out
    assert load_tree(aff_file.parent / "tree.json").group_counts == [5, 5, 5, 5]


def test_build_with_explicit_costs(cli, tmp_path):
    path = tmp_path / "aff.npz"
    save_affinity(path, AffinityData(affinity(), TASKS, LOCATIONS))
    result = cli("build", "--affinity", path, "--params", "20", "--stage-params", "1,2,3,4",
                 "--head-params", "0,0,1,1,1")
    assert result.code == 0, result.err
    tree = load_tree(tmp_path / "tree.json")
    assert tree.params == tree_params(tree.partitions, TASKS, [1, 2, 3, 4], [0, 0, 1, 1, 1]) <= 20
    assert_one_line_error(cli("build", "--affinity", path, "--params", "20M"), "--stage-params", "--head-params",
                          "branchnet affinity --config")
    assert_one_line_error(cli("build", "--affinity", path, "--params", "20", "--stage-params", "1,2,3",
                              "--head-params", "1,1,1,1,1"), "stage-params has 3 values")
    assert_one_line_error(cli("build", "--affinity", path, "--params", "20", "--stage-params", "1,x,3,4",
                              "--head-params", "1,1,1,1,1"), "--stage-params")


@pytest.mark.parametrize("budget", ["120X", "-5M", "abc", "0"])
def test_malformed_budgets(cli, aff_file, budget):
    assert_one_line_error(cli("build", "--affinity", aff_file, "--params", budget), budget)
    assert_one_line_error(cli("build", "--affinity", aff_file, "--params", "60M", "--flops", budget), budget)
    assert not (aff_file.parent / "tree.json").exists()


def test_budget_below_all_shared(cli, aff_file):
    result = cli("build", "--affinity", aff_file, "--params", "5M")
    assert_one_line_error(result, "all-shared", str(SHARED))
    assert not (aff_file.parent / "tree.json").exists()


def test_params_or_sweep_required(cli, aff_file):
    assert_one_line_error(cli("build", "--affinity", aff_file), "--params")


def _bad_affinity(tmp_path, **arrays):
    base = {"affinity": affinity(), "tasks": np.array(TASKS), "locations": np.array(LOCATIONS),
            "stage_params": STAGE, "head_params": HEAD}
    base.update(arrays)
    base = {k: v for k, v in base.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **base)
    return path


def _asymmetric():
    a = affinity()
    a[1, 0, 2] += 0.3
    return a


def _bad_diagonal():
    a = affinity()
    a[0, 1, 1] = 0.5
    return a


def _nan():
    a = affinity()
    a[2, 0, 1] = a[2, 1, 0] = np.nan
    return a


@pytest.mark.parametrize("arrays, fragment", [
    ({"tasks": None}, "lacks key(s) tasks"),
    ({"affinity": np.ones((4, 5))}, "shape (D, N, N)"),
    ({"affinity": np.ones((4, 4, 4))}, "N=4"),
    ({"stage_params": np.ones(3)}, "stage_params"),
    ({"affinity": _asymmetric()}, "not symmetric"),
    ({"affinity": _bad_diagonal()}, "diagonal"),
    ({"affinity": _nan()}, "NaN"),
    ({"tasks": np.array(["seg", "depth", "seg", "edge", "sal"])}, "named twice"),
])
def test_bad_affinity_files(cli, tmp_path, arrays, fragment):
    path = _bad_affinity(tmp_path, **arrays)
    assert_one_line_error(cli("build", "--affinity", path, "--params", "60M"), fragment)
    assert not (tmp_path / "tree.json").exists()


def test_missing_affinity_file(cli, tmp_path):
    assert_one_line_error(cli("build", "--affinity", tmp_path / "nope.npz", "--params", "60M"), "does not exist")


def test_build_costed_by_a_backbone_and_the_configs_heads(cli, tmp_path, tiny_config):
    """An affinity without costs (from --features): --backbone/--input-size with --config's heads."""
    from branchnet.nn.backbones import NUM_STAGES
    from branchnet.config import load_config
    from branchnet.data import build_tasks
    from branchnet.nn.branched import BranchedNet

    tasks = ["seg", "depth", "normals"]
    config = tiny_config(tasks)
    path = tmp_path / "aff.npz"
    save_affinity(path, AffinityData(affinity()[:, :3, :3], tasks, LOCATIONS))
    result = cli("build", "--affinity", path, "--sweep", "--json", "--backbone", "resnet34", "--input-size", "48", "48",
                 "--config", config, "--out", tmp_path / "tree.json")
    assert result.code == 0, result.err
    path_trees = json.loads(result.out)
    cfg = load_config(config)
    cfg = cfg.__class__(**{**cfg.__dict__, "model": cfg.model.__class__(**{**cfg.model.__dict__, "backbone": "resnet34"})})
    for tree in (path_trees[0], path_trees[len(path_trees) // 2], path_trees[-1]):
        assert tree["backbone"] == "resnet34"
        net = BranchedNet(build_tasks(cfg), tree["partitions"], cfg.model, (48, 48))
        costs = net.costs()
        assert tree["params"] == costs["params"] and tree["flops"] == costs["flops"]
    assert len(path_trees[0]["partitions"]) == NUM_STAGES
    assert_one_line_error(cli("build", "--affinity", path, "--params", "5M", "--backbone", "resnet34"), "--config")
    assert_one_line_error(cli("build", "--affinity", path, "--params", "5M", "--backbone", "resnet9000",
                              "--config", config), "resnet9000")
    other = tiny_config(["seg", "depth"])
    assert_one_line_error(cli("build", "--affinity", path, "--params", "5M", "--config", other), "normals", "config")

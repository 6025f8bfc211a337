"""``branchnet affinity``: the --features path end to end, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from branchnet.affinity import load_affinity
from conftest import assert_one_line_error
from test_rsa_reference import affinity as reference_affinity
from test_rsa_reference import rdm as reference_rdm
from test_rsa_reference import structured_features

TASKS = ["seg", "depth", "normals"]
SHAPES = {"layer1": (4, 6, 6), "layer2": (8, 3, 3), "layer3": (16,)}


def write_features(path, features):
    np.savez(path, **{f"{t}/{loc}": v for t, locs in features.items() for loc, v in locs.items()})
    return path


@pytest.fixture
def features_file(tmp_path):
    features = structured_features(np.random.default_rng(0), 14, SHAPES, TASKS)
    return write_features(tmp_path / "features.npz", features), features


def test_features_end_to_end(cli, features_file, tmp_path):
    path, features = features_file
    out = tmp_path / "out" / "affinity.npz"
    result = cli("affinity", "--features", path, "--out", out, "--pool", "avg:2", "--bootstrap", "5",
                 "--save-rdms")
    assert result.code == 0, result.err
    assert result.out == ""  # stdout stays clean
    rdms = np.stack([[reference_rdm(features[t][loc], pool=2) for loc in SHAPES] for t in TASKS])
    data = load_affinity(out)
    assert data.tasks == TASKS and data.locations == list(SHAPES)
    np.testing.assert_allclose(data.affinity, reference_affinity(rdms), atol=1e-5)
    np.testing.assert_allclose(data.rdms, rdms, atol=1e-5)
    assert data.affinity_std.shape == (3, 3, 3)
    assert data.extra["affinity_low"].shape == data.extra["affinity_high"].shape == (3, 3, 3)
    content = json.loads(out.with_suffix(".json").read_text())
    np.testing.assert_allclose(content["affinity"], data.affinity, atol=1e-12)
    assert content["settings"]["pool"] == "avg:2" and content["settings"]["bootstrap"] == 5
    assert content["settings"]["features"] == str(path) and content["rdms_shape"] == [3, 3, 14, 14]
    assert "affinity_low" in content and "affinity_std" in content
    for figure in (out.with_suffix(".png"), out.with_name("affinity_depth.png")):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_features_with_runs_dir_and_options(cli, features_file, tmp_path):
    path, features = features_file
    runs = tmp_path / "runs"
    result = cli("affinity", "--features", path, "--runs", runs, "--center", "features", "--images", "10",
                 "--max-memory", "2K")
    assert result.code == 0, result.err
    data = load_affinity(runs / "affinity.npz")
    rdms = np.stack([[reference_rdm(features[t][loc][:10], "features") for loc in SHAPES] for t in TASKS])
    np.testing.assert_allclose(data.affinity, reference_affinity(rdms), atol=1e-5)
    assert data.rdms is None and data.affinity_std is None
    assert sorted(p.name for p in runs.iterdir()) == ["affinity.json", "affinity.npz", "affinity.png",
                                                      "affinity_depth.png"]  # spill files removed


def bad(tmp_path, arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, fragments", [
    ("few", ["at least K=4"]),
    ("k_differs", ["'depth/l1' covers K=6", "'seg/l1' covers K=5"]),
    ("constant", ["task 'depth'", "location 'l2'", "image 3", "constant"]),
    ("nan", ["task 'seg'", "location 'l1'", "image 4", "NaN or Inf"]),
    ("inf", ["task 'depth'", "location 'l1'", "image 0", "NaN or Inf"]),
    ("key", ["key 'seg_l1'", "task/location"]),
    ("missing", ["lacks key(s) depth/l2"]),
])
def test_bad_features_are_one_line_errors(cli, tmp_path, case, fragments):
    rng = np.random.default_rng(0)
    arrays = {f"{t}/{loc}": rng.standard_normal((5, 7)) for t in ("seg", "depth") for loc in ("l1", "l2")}
    if case == "few":
        arrays = {k: v[:3] for k, v in arrays.items()}
    elif case == "k_differs":
        arrays["depth/l1"] = rng.standard_normal((6, 7))
    elif case == "constant":
        arrays["depth/l2"][3] = 0.25
    elif case == "nan":
        arrays["seg/l1"][4, 2] = np.nan
    elif case == "inf":
        arrays["depth/l1"][0, 6] = np.inf
    elif case == "key":
        arrays["seg_l1"] = arrays.pop("seg/l1")
    elif case == "missing":
        del arrays["depth/l2"]
    result = cli("affinity", "--features", bad(tmp_path, arrays), "--out", tmp_path / "out" / "a.npz")
    assert_one_line_error(result, *fragments)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("args, fragments", [
    ([], ["exactly one of --config", "--features"]),
    (["--config", "c.yaml", "--features", "f.npz"], ["exactly one of"]),
    (["--features", "{f}"], ["--features needs --out"]),
    (["--features", "{f}", "--out", "{o}", "--pool", "max:2"], ["--pool 'max:2'", "avg:S"]),
    (["--features", "{f}", "--out", "{o}", "--pool", "avg:0"], ["--pool"]),
    (["--features", "{f}", "--out", "{o}", "--images", "3"], ["--images 3", "at least 4"]),
    (["--features", "{f}", "--out", "{o}", "--images", "99"], ["--images 99", "K=14"]),
    (["--features", "{f}", "--out", "{o}", "--center", "pixels"], ["unknown --center mode 'pixels'",
                                                                    "features, images"]),
    (["--features", "{f}", "--out", "{o}", "--bootstrap", "1"], ["--bootstrap 1"]),
    (["--features", "{f}", "--out", "{o}", "--max-memory", "4X"], ["--max-memory '4X'"]),
    (["--features", "{f}", "--out", "{o}", "--device", "tpu"], ["--device 'tpu'"]),
    (["--features", "{f}", "--out", "{d}/out/a.txt"], ["must be an .npz"]),
    (["--features", "{d}/nope.npz", "--out", "{o}"], ["does not exist"]),
])
def test_bad_options_are_one_line_errors(cli, features_file, tmp_path, args, fragments):
    path, _ = features_file
    args = [a.format(f=path, o=tmp_path / "out" / "a.npz", d=tmp_path) for a in args]
    assert_one_line_error(cli("affinity", *args), *fragments)
    assert_nothing_written(tmp_path)


def test_config_path_checks_its_inputs(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    assert_one_line_error(cli("affinity", "--config", tmp_path / "none.yaml"), "does not exist")
    assert_one_line_error(cli("affinity", "--config", config, "--pool", "avg"), "--pool")

"""The run store (branchnet/runs.py): fingerprints, records, and the reuse rule of docs/design.md
("Reuse rule"), each case failing before the store existed."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from branchnet.config import load_config
from branchnet.errors import BadInput
from branchnet.runs import (find_baselines, first_difference, fingerprint, json_safe, plan_network, read_record,
                            single_dir, single_fingerprint, training_settings, write_record)
from branchnet.steps.train_single import train_single
from conftest import TINY_CONFIG, assert_one_line_error


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, data_cache):
    """A tiny config and a run directory holding its trained 'seg' single-task model."""
    base = tmp_path_factory.mktemp("runs-store")
    config = base / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(root=data_cache, tasks="[seg]"))
    runs = base / "runs"
    train_single(load_config(config), runs, quiet=True)
    return config, runs


def copy_runs(seg_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(seg_run[1], runs)
    return runs


# ----------------------------------------------------------------------------- fingerprints


def test_fingerprint_holds_what_changes_training_and_nothing_else(tiny_config):
    base = load_config(tiny_config(["seg"]))
    same = ["data.workers=3", "train.device=cpu", "train.eval_every=2", "data.root=/elsewhere",
            "data.splits.affinity=7", "data.options.workers=2"]
    for item in same:
        assert fingerprint("single", load_config(tiny_config(["seg"]), sets=[item]), ["seg"]) == \
            fingerprint("single", base, ["seg"]), item
    differ = {"train.lr=0.5": "train.lr", "train.batch_size=8": "train.batch_size", "seed=7": "seed",
              "train.optimizer=sgd": "train.optimizer", "model.width=0.25": "model.width",
              "model.head_channels=4": "model.head_channels", "train.epochs=3": "train.epochs",
              "data.splits.train=32": "data.splits", "data.image_size=[48, 48]": "data.image_size"}
    for item, name in differ.items():
        other = fingerprint("single", load_config(tiny_config(["seg"]), sets=[item]), ["seg"])
        assert first_difference(fingerprint("single", base, ["seg"]), other).startswith(name), item


def test_multi_task_settings_are_not_single_task_settings(tiny_config):
    base = load_config(tiny_config(["seg", "depth"]))
    weighted = load_config(tiny_config(["seg", "depth"]), sets=["train.weighting=dwa", "train.loss_weights={seg: 2}"])
    assert single_fingerprint(base, "seg") == single_fingerprint(weighted, "seg")
    assert "weighting" not in training_settings(base, multi_task=False)["train"]
    assert first_difference(fingerprint("branched", base, ["seg", "depth"]),
                            fingerprint("branched", weighted, ["seg", "depth"])) == "train.weighting 'uniform' -> 'dwa'"


def test_first_difference_names_the_path():
    assert first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == "a.c 2 -> 3"
    assert first_difference({"a": [1, 2]}, {"a": [1, 5]}) == "a[1] 2 -> 5"
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == "b null -> 2"
    assert first_difference({"x": [1]}, {"x": [1]}) is None


def test_json_safe_turns_nan_into_null_so_metadata_cannot_fail():
    value = json_safe({"a": math.nan, "b": [math.inf, 1.5], "c": torch.tensor(2.0), "d": (1, 2), "e": -math.inf})
    assert value == {"a": None, "b": [None, 1.5], "c": 2.0, "d": [1, 2], "e": None}
    json.dumps(value, allow_nan=False)


# ----------------------------------------------------------------------------- records


def test_a_committed_network_has_a_record_matching_its_files(seg_run):
    record, why = read_record(single_dir(seg_run[1], "seg"))
    assert record is not None, why
    assert record.fingerprint == single_fingerprint(load_config(seg_run[0]), "seg")
    assert set(record.files) == {"model.pt", "metrics.json"}
    assert (single_dir(seg_run[1], "seg") / "history.csv").is_file()
    assert (single_dir(seg_run[1], "seg") / "curves.png").is_file()


def test_a_truncated_model_is_not_reused_but_trained_again(cli, seg_run, tmp_path):
    runs = copy_runs(seg_run, tmp_path)
    model = single_dir(runs, "seg") / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    record, why = read_record(single_dir(runs, "seg"))
    assert record is None and "model.pt changed" in why
    plan = plan_network(single_dir(runs, "seg"), single_fingerprint(load_config(seg_run[0]), "seg"), "single/seg")
    assert plan.action == "train" and "not reusable" in plan.note
    result = cli("train-single", "--config", seg_run[0], "--runs", runs)
    assert result.code == 0, result.err
    assert read_record(single_dir(runs, "seg"))[0] is not None
    assert torch.load(model, weights_only=True)["format"] == "branchnet.model/1"


def test_a_model_without_record_is_not_counted_as_trained(seg_run, tmp_path):
    runs = copy_runs(seg_run, tmp_path)
    (single_dir(runs, "seg") / "run.json").unlink()
    record, why = read_record(single_dir(runs, "seg"))
    assert record is None and "no record" in why
    with pytest.raises(BadInput, match="not usable"):
        find_baselines(load_config(seg_run[0]), runs, ["seg"])


def test_record_refuses_a_changed_metrics_file(seg_run, tmp_path):
    runs = copy_runs(seg_run, tmp_path)
    path = single_dir(runs, "seg") / "metrics.json"
    path.write_text(path.read_text().replace('"epochs": 2', '"epochs": 9'))
    assert "metrics.json changed" in read_record(single_dir(runs, "seg"))[1]
    write_record(single_dir(runs, "seg"), {"kind": "x"})  # a re-commit accepts the files as they are now
    assert read_record(single_dir(runs, "seg"))[0].fingerprint == {"kind": "x"}


# ----------------------------------------------------------------------------- the reuse rule on the CLI


@pytest.mark.parametrize("setting, named", [
    ("train.lr=0.02", "train.lr 0.01 -> 0.02"),
    ("train.batch_size=8", "train.batch_size 16 -> 8"),
    ("train.optimizer=sgd", "train.optimizer 'adam' -> 'sgd'"),
    ("seed=7", "seed 0 -> 7"),
    ("model.width=0.25", "model.width 0.125 -> 0.25"),
    ("model.head_channels=4", "model.head_channels 8 -> 4"),
    ("train.epochs=1", "train.epochs 2 -> 1"),
    ("train.weight_decay=0.01", "train.weight_decay"),
])
def test_train_single_refuses_a_model_trained_with_other_settings(cli, seg_run, tmp_path, setting, named):
    runs = copy_runs(seg_run, tmp_path)
    before = (single_dir(runs, "seg") / "model.pt").stat().st_mtime_ns
    result = cli("train-single", "--config", seg_run[0], "--runs", runs, "--set", setting)
    assert_one_line_error(result, "single/seg", "other settings", named, "--force")
    assert (single_dir(runs, "seg") / "model.pt").stat().st_mtime_ns == before


def test_same_settings_are_kept_and_force_retrains(cli, seg_run, tmp_path):
    runs = copy_runs(seg_run, tmp_path)
    model = single_dir(runs, "seg") / "model.pt"
    before = model.stat().st_mtime_ns
    assert cli("train-single", "--config", seg_run[0], "--runs", runs, "--set", "data.workers=0").code == 0
    assert model.stat().st_mtime_ns == before  # not a training setting: kept
    result = cli("train-single", "--config", seg_run[0], "--runs", runs, "--set", "train.epochs=1", "--force")
    assert result.code == 0, result.err
    assert json.loads((single_dir(runs, "seg") / "metrics.json").read_text())["epochs"] == 1
    assert read_record(single_dir(runs, "seg"))[0].fingerprint["settings"]["train"]["epochs"] == 1


@pytest.mark.parametrize("setting", ["train.epochs=3", "train.lr=0.02", "seed=7"])
def test_branched_training_refuses_stale_baselines(cli, seg_run, tmp_path, setting):
    """`train-single` with one setting, then a branched network with another: no silent Δ_MTL."""
    runs = copy_runs(seg_run, tmp_path)
    result = cli("train", "--config", seg_run[0], "--runs", runs, "--tree", "shared", "--set", setting)
    assert_one_line_error(result, "single-task model of 'seg'", "other settings", setting.split("=")[0],
                          "--baselines")
    assert not (runs / "branched").exists()


def test_run_refuses_stale_single_task_models(cli, seg_run, tmp_path):
    """The issue's first case: `train-single` at 2 epochs, then `run --epochs 3`."""
    runs = copy_runs(seg_run, tmp_path)
    result = cli("run", "--config", seg_run[0], "--runs", runs, "--epochs", "3")
    assert_one_line_error(result, "single/seg", "train.epochs 2 -> 3", "--force")
    assert not (runs / "branched").exists() and not (runs / "affinity.npz").exists()


def test_affinity_takes_set_and_measures_only_matching_models(cli, seg_run, tmp_path):
    runs = copy_runs(seg_run, tmp_path)
    assert_one_line_error(cli("affinity", "--config", seg_run[0], "--runs", runs, "--set", "train.lr=0.5"),
                          "single-task model of 'seg'", "train.lr 0.01 -> 0.5")
    result = cli("affinity", "--config", seg_run[0], "--runs", runs, "--set", "affinity.images=8")
    assert result.code == 0, result.err
    info = json.loads((runs / "affinity.json").read_text())
    assert info["settings"]["images"] == 8
    assert info["settings"]["models"]["seg"] == read_record(single_dir(runs, "seg"))[0].model_sha256

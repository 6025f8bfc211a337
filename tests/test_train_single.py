"""``branchnet train-single``: training lowers the loss, resume reproduces, bad input fails clearly."""

from __future__ import annotations

import json

import pytest
import torch

import branchnet.train.engine as engine
from branchnet.model_file import load_model
from branchnet.config import load_config
from branchnet.runs import single_fingerprint
from branchnet.steps.train_single import train_single
from conftest import assert_one_line_error


def test_cli_trains_every_task_and_writes_artifacts(cli, tiny_config, tmp_path):
    runs = tmp_path / "runs"
    result = cli("train-single", "--config", tiny_config(), "--runs", runs)
    assert result.code == 0, result.err
    for task in ("seg", "depth"):
        directory = runs / "single" / task
        metrics = json.loads((directory / "metrics.json").read_text())
        assert set(metrics["val"][task]) >= {"loss"} and set(metrics["test"][task]) >= {"loss"}
        assert metrics["params"] == sum(metrics["stage_params"]) + metrics["head_params"][task]
        assert metrics["flops"] > 0 and len(metrics["stage_flops"]) == 4
        assert not (directory / "checkpoint.pt").exists()
        loaded = load_model(directory / "model.pt")
        assert loaded.kind == "single" and [t.name for t in loaded.tasks] == [task]
        assert sum(p.numel() for p in loaded.model.parameters()) == metrics["params"]
    # already trained: skipped (the files stay as they were)
    stamp = (runs / "single" / "seg" / "model.pt").stat().st_mtime_ns
    assert cli("train-single", "--config", tiny_config(), "--runs", runs, "--task", "seg").code == 0
    assert (runs / "single" / "seg" / "model.pt").stat().st_mtime_ns == stamp
    assert cli("train-single", "--config", tiny_config(), "--runs", runs, "--task", "seg", "--force",
               "--epochs", "1").code == 0
    assert (runs / "single" / "seg" / "model.pt").stat().st_mtime_ns != stamp


def test_training_lowers_the_loss(tiny_config, tmp_path):
    config = load_config(tiny_config(["seg"]), overrides={"train.epochs": 4})
    metrics = train_single(config, tmp_path / "runs", quiet=True)["seg"]
    losses = [epoch["train_loss"]["seg"] for epoch in metrics["history"]]
    assert losses[-1] < 0.8 * losses[0], losses


def test_resume_after_a_kill_equals_an_uninterrupted_run(tiny_config, tmp_path, monkeypatch):
    config = load_config(tiny_config(["depth"]), overrides={"train.epochs": 3})
    full = train_single(config, tmp_path / "full", quiet=True)["depth"]

    real_save = engine.atomic_torch_save
    calls = {"n": 0}

    def save_then_die(path, obj):
        real_save(path, obj)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed right after epoch 2's checkpoint

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_single(config, tmp_path / "killed", quiet=True)
    monkeypatch.setattr(engine, "atomic_torch_save", real_save)
    assert (tmp_path / "killed" / "single" / "depth" / "checkpoint.pt").is_file()
    resumed = train_single(config, tmp_path / "killed", resume=True, quiet=True)["depth"]

    assert resumed["test"] == full["test"] and resumed["val"] == full["val"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    a = load_model(tmp_path / "full" / "single" / "depth" / "model.pt").model.state_dict()
    b = load_model(tmp_path / "killed" / "single" / "depth" / "model.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_settings_is_refused(cli, tiny_config, tmp_path):
    runs = tmp_path / "runs"
    directory = runs / "single" / "seg"
    directory.mkdir(parents=True)
    other = load_config(tiny_config(["seg"]), sets=["train.lr=0.5"])
    torch.save({"format": engine.CHECKPOINT_FORMAT, "fingerprint": single_fingerprint(other, "seg"), "epochs": 2},
               directory / "checkpoint.pt")
    result = cli("train-single", "--config", tiny_config(["seg"]), "--runs", runs, "--resume")
    assert_one_line_error(result, "cannot be resumed with these settings", "train.lr 0.5 -> 0.01", "drop --resume")


def test_corrupt_checkpoint_is_one_line(cli, tiny_config, tmp_path):
    runs = tmp_path / "runs"
    (runs / "single" / "seg").mkdir(parents=True)
    (runs / "single" / "seg" / "checkpoint.pt").write_bytes(b"\x00garbage")
    result = cli("train-single", "--config", tiny_config(["seg"]), "--runs", runs, "--resume")
    assert_one_line_error(result, "corrupt")


@pytest.mark.parametrize("replace, fragments", [
    ({"backbone: resnet18": "backbone: resnet19"}, ["unknown backbone 'resnet19'", "resnet18"]),
    ({"tasks: [seg]": "tasks: [{name: seg, type: segmentatoin}]"}, ["unknown task type", "segmentation"]),
    ({"tasks: [seg]": "tasks: [sge]"}, ["unknown task", "did you mean 'seg'"]),
    ({"train: {epochs": "train: {epoch"}, ["unknown key 'train.epoch'", "epochs"]),
    ({"seed: 0": "seed: 0\nmodle: {}"}, ["unknown key 'modle'", "did you mean 'model'"]),
    ({"lr: 0.01": "lr: fast"}, ["'train.lr' must be a number"]),
])
def test_bad_configs_fail_in_one_line(cli, tiny_config, tmp_path, replace, fragments):
    path = tiny_config(["seg"], **replace)
    result = cli("train-single", "--config", path, "--runs", tmp_path / "runs")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "runs" / "single" / "seg" / "model.pt").exists()


def test_missing_config_and_unwritable_output(cli, tiny_config, tmp_path):
    assert_one_line_error(cli("train-single", "--config", tmp_path / "nope.yaml"), "does not exist")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("train-single", "--config", tiny_config(["seg"]), "--runs", blocker / "runs")
    assert_one_line_error(result, "cannot create output directory")


def test_unknown_task_on_the_command_line(cli, tiny_config, tmp_path):
    result = cli("train-single", "--config", tiny_config(["seg"]), "--runs", tmp_path / "r", "--task", "depth")
    assert_one_line_error(result, "unknown task of this config 'depth'")

"""``branchnet predict``: the figure's layout for single-task, branched and candidate model
files (not its pixels), and the one-line errors."""

from __future__ import annotations

import pytest
import torch

from branchnet.config import load_config
from branchnet.data import build_tasks
from branchnet.nn.branched import BranchedNet
from branchnet.model_file import save_model
from branchnet.steps.predict import load_for_prediction, prediction_figure
from branchnet.tree import separate_partitions, shared_partitions
from conftest import assert_one_line_error

TASKS = ("seg", "depth", "normals", "edges", "keypoints", "count", "attr_red")


def _model_file(tiny_config, tmp_path, tasks, kind, partitions):
    config = load_config(tiny_config(tasks))
    task_objects = build_tasks(config)
    torch.manual_seed(0)
    model = BranchedNet(task_objects, partitions(list(tasks), 4), config.model, config.image_size)
    return save_model(tmp_path / kind / "model.pt", model, config, kind)


def test_figure_has_a_row_per_image_and_target_prediction_columns(tiny_config, tmp_path):
    path = _model_file(tiny_config, tmp_path, TASKS, "branched", shared_partitions)
    fig = prediction_figure(load_for_prediction(path), "val", 3)
    assert len(fig.axes) == 3 * (1 + 2 * len(TASKS))
    titles = [ax.get_title() for ax in fig.axes[:1 + 2 * len(TASKS)]]
    assert titles == ["image"] + [f"{t} {w}" for t in TASKS for w in ("target", "prediction")]
    assert all(not ax.get_title() for ax in fig.axes[1 + 2 * len(TASKS):])
    count_target = fig.axes[1 + 2 * TASKS.index("count")]
    assert count_target.texts and count_target.texts[0].get_text().startswith("class ")
    assert len(fig.axes[1].images) == 1  # seg target drawn as an image


@pytest.mark.parametrize("kind, tasks, partitions", [("single", ("depth",), shared_partitions),
                                                     ("candidate", ("seg", "count"), separate_partitions)])
def test_cli_draws_single_and_candidate_networks(cli, tiny_config, tmp_path, kind, tasks, partitions):
    path = _model_file(tiny_config, tmp_path, tasks, kind, partitions)
    out = tmp_path / "grid.png"
    result = cli("predict", "--model", path, "--split", "test", "--images", 2, "--out", out)
    assert result.code == 0, result.err
    assert out.is_file() and out.stat().st_size > 0 and str(out) in result.out


def test_bad_model_file_and_split_fail_in_one_line(cli, tiny_config, tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_text("not a model")
    assert_one_line_error(cli("predict", "--model", junk), "not a branchnet model file")
    assert_one_line_error(cli("predict", "--model", tmp_path / "missing.pt"), "does not exist")
    path = _model_file(tiny_config, tmp_path, ("depth",), "single", shared_partitions)
    assert_one_line_error(cli("predict", "--model", path, "--split", "vla"), "unknown split 'vla'", "val")
    assert_one_line_error(cli("predict", "--model", path, "--images", 0), "--images must be at least 1")
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"format": "branchnet.checkpoint/1"}, checkpoint)
    assert_one_line_error(cli("predict", "--model", checkpoint), "not a branchnet model file")

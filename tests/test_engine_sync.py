"""No host synchronisation inside a training step: branchnet's code reads no tensor value back
(``.item()``, ``float()``, ``.tolist()``, ``bool()``, ``.cpu()``, ``.numpy()``) between a
step's start and its end. The values are read once per epoch and by the progress view."""

from __future__ import annotations

import sys

import pytest
import torch

import branchnet.train.guard as guard
from branchnet.config import load_config
from branchnet.data import build_dataset, build_tasks
from branchnet.nn import NUM_STAGES, BranchedNet
from branchnet.train.engine import fit
from branchnet.train.hooks import TrainingHook
from branchnet.tree import shared_partitions

READS = ("item", "__float__", "__int__", "__bool__", "tolist", "cpu", "numpy")


class Window(TrainingHook):
    """Counts the reads that happen between before_step and after_step."""

    name = "window"

    def __init__(self, counter: dict) -> None:
        self.counter = counter
        self.inside: list[int] = []
        self.steps = 0

    def before_step(self, ctx, images, targets):
        self.start = self.counter["n"]

    def after_step(self, ctx):
        self.inside.append(self.counter["n"] - self.start)
        self.steps += 1


@pytest.mark.parametrize("weighting", ["uniform", "uncertainty", "gradnorm"])
def test_a_training_step_reads_nothing_back(tiny_config, tmp_path, monkeypatch, weighting):
    config = load_config(tiny_config(["seg", "depth"]), sets=[f"train.weighting={weighting}", "train.clip_grad=1.0"])
    tasks = build_tasks(config)
    torch.manual_seed(0)
    model = BranchedNet(tasks, shared_partitions(["seg", "depth"], NUM_STAGES), config.model, config.image_size)
    counter = {"n": 0, "where": []}

    def counting(name):
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("branchnet"):  # torch's own internals (CPU optimiser state) are not ours
                counter["n"] += 1
                counter["where"].append(f"{caller}.{name}")
            return real(self, *args, **kwargs)
        return wrapper

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    monkeypatch.setattr(guard, "SYNC_SECONDS", 1e9)  # the progress view never reads during this test
    window = Window(counter)
    splits = [build_dataset(config, s, ["seg", "depth"]) for s in ("train", "val")]
    fit(model, tasks, config, tmp_path / "out", *splits, quiet=True, hooks=[window])
    assert window.steps == 2 * (48 // 16)
    assert window.inside == [0] * window.steps, counter["where"]
    assert counter["n"] > 0  # the epoch ends do read (the counter works)

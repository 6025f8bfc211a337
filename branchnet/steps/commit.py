"""The save epilogue of every trained network (docs/architecture.md, "The reuse rule, in the code"):
one floor above the run store (:mod:`branchnet.runs`), the networks' file (:mod:`branchnet.model_file`)
and the loop's curves (:mod:`branchnet.train.history`), which it puts together."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from branchnet import distributed
from branchnet.atomic import atomic_write_json, json_safe
from branchnet.config import Config
from branchnet.model_file import save_model
from branchnet.runs import CHECKPOINT_FILE, CURVES_FILE, METRICS_FILE, MODEL_FILE, write_record
from branchnet.train.history import plot_curves


def commit_network(directory: str | os.PathLike, model: Any, config: Config, kind: str, fp: Mapping[str, Any],
                   metrics: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    """The save epilogue of every trained network, on rank 0, in an order that never loses work:
    ``model.pt`` first, then ``metrics.json`` (JSON that cannot fail), then the record
    ``run.json`` that commits both, then drop the checkpoint and draw ``curves.png``; all
    ranks wait at the end."""
    directory = Path(directory)
    if distributed.is_main():
        save_model(directory / MODEL_FILE, model, config, kind, dict(extra or {}))
        atomic_write_json(directory / METRICS_FILE, json_safe(dict(metrics)))
        write_record(directory, fp)
        (directory / CHECKPOINT_FILE).unlink(missing_ok=True)
        if metrics.get("history"):
            plot_curves(directory / CURVES_FILE, metrics["history"], model.tasks)
    distributed.barrier()

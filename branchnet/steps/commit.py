"""The save epilogue of every trained network (docs/architecture.md, "The reuse rule, in the code"):
one floor above the run store (:mod:`branchnet.runs`), the networks' file (:mod:`branchnet.model_file`)
and the loop's curves (:mod:`branchnet.train.history`), which it puts together; and
:func:`draw_curves`, a network's curves.png drawn later from its metrics."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

from branchnet import distributed
from branchnet.atomic import atomic_write_json, json_safe
from branchnet.config import Config
from branchnet.errors import BadInput
from branchnet.model_file import save_model
from branchnet.runs import CHECKPOINT_FILE, CURVES_FILE, METRICS_FILE, MODEL_FILE, read_json, write_record
from branchnet.train.history import plot_curves


def commit_network(directory: str | os.PathLike, model: Any, config: Config, kind: str, fp: Mapping[str, Any],
                   metrics: Mapping[str, Any], extra: Mapping[str, Any] | None = None, *,
                   curves: bool = True) -> None:
    """The save epilogue of every trained network, on rank 0, in an order that never loses work:
    ``model.pt`` first, then ``metrics.json`` (JSON that cannot fail), each hashed as it is
    written, then the record ``run.json`` that commits both, then drop the checkpoint and (with ``curves``) draw
    ``curves.png``; all ranks wait at the end. The networks of a study (``evaluate``,
    ``search``) leave ``curves`` off: nobody looks at dozens of them, and drawing costs more
    than the rest of the commit (:func:`draw_curves` draws one later)."""
    directory = Path(directory)
    if distributed.is_main():
        digests: dict[str, dict[str, Any]] = {MODEL_FILE: {}, METRICS_FILE: {}}  # hashed as they are written
        save_model(directory / MODEL_FILE, model, config, kind, dict(extra or {}), written=digests[MODEL_FILE])
        atomic_write_json(directory / METRICS_FILE, json_safe(dict(metrics)), written=digests[METRICS_FILE])
        write_record(directory, fp, digests=digests)
        (directory / CHECKPOINT_FILE).unlink(missing_ok=True)
        if curves and metrics.get("history"):
            plot_curves(directory / CURVES_FILE, metrics["history"], model.tasks)
    distributed.barrier()


def draw_curves(directory: str | os.PathLike, *, force: bool = False) -> Path:
    """Draw the ``curves.png`` of a finished network from its ``metrics.json`` (its per-epoch
    history and its tasks), e.g. of a study network that was committed without one; returns its
    path. An existing curves.png is kept unless ``force``. :class:`BadInput` when the directory
    holds no metrics.json with a history."""
    directory = Path(directory)
    path = directory / CURVES_FILE
    if path.is_file() and not force:
        return path
    metrics = read_json(directory / METRICS_FILE)
    if not isinstance(metrics, dict) or not metrics.get("history") or not isinstance(metrics.get("tasks"), dict):
        raise BadInput(f"{directory} holds no metrics.json with a training history; train the network first")
    tasks = [SimpleNamespace(name=name, main_metric=info.get("main_metric"),
                             higher_is_better=bool(info.get("higher_is_better")))
             for name, info in metrics["tasks"].items()]
    return plot_curves(path, metrics["history"], tasks)

"""Training curves a person can open: ``history.csv`` (one row per epoch), ``curves.png``, and
TensorBoard event files when the optional ``tensorboard`` package is installed
(``pip install -e '.[tensorboard]'``).

A history record (one per epoch, as in ``metrics.json``'s ``history``) holds ``epoch``,
``train_loss`` {task: mean loss}, ``weights`` {task: loss weight}, ``lr``,
``images_per_second``, ``seconds`` and, when the validation split was scored, ``val``
{task: {metric: value}}; hooks may add flat numeric entries.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

from branchnet.atomic import atomic_write_text


def history_rows(history: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The history as CSV columns and rows: nested entries flattened to ``a/b/c`` names."""
    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    for record in history:
        row: dict[str, Any] = {}
        _flatten(record, "", row)
        for key in row:
            if key not in columns:
                columns.append(key)
        rows.append(row)
    return columns, rows


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}{key}/", out)
    elif isinstance(value, (list, tuple)):
        out[prefix.rstrip("/")] = " ".join(str(v) for v in value)
    else:
        out[prefix.rstrip("/")] = value


def write_history(path: str | os.PathLike, history: Sequence[dict[str, Any]]) -> Path:
    """Write ``history.csv`` atomically (columns: epoch, train_loss/<task>, val/<task>/<metric>, ...)."""
    columns, rows = history_rows(history)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return atomic_write_text(path, buffer.getvalue())


def plot_curves(path: str | os.PathLike, history: Sequence[dict[str, Any]], tasks: Sequence[Any]) -> Path:
    """``curves.png``: training loss per task (left) and each task's main validation metric (right)."""
    from branchnet.plotting import plt, save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    epochs = [r["epoch"] for r in history]
    for task in tasks:
        left.plot(epochs, [r["train_loss"].get(task.name) for r in history], marker="o", ms=3, label=task.name)
        scored = [(r["epoch"], (r.get("val") or {}).get(task.name, {}).get(task.main_metric)) for r in history
                  if r.get("val")]
        if scored:
            right.plot([e for e, _ in scored], [v for _, v in scored], marker="o", ms=3,
                       label=f"{task.name} {task.main_metric} {'↑' if task.higher_is_better else '↓'}")
    left.set_title("training loss")
    right.set_title("validation metric")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


class TensorBoardLog:
    """Scalars of every epoch in TensorBoard event files under ``directory/tensorboard``,
    when ``tensorboard`` is installed (else nothing happens)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra is not installed
            return
        self.writer = SummaryWriter(log_dir=str(Path(directory) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        row: dict[str, Any] = {}
        _flatten(record, "", row)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

"""``trees.csv``: one row per (role, seed) of a study, from the trained networks' metrics.

Columns (docs/evaluate.md, "trees.csv"): ``tree_id, source, budget, seed, groups,
partitions, params, flops``, one ``dissimilarity_<scorer>`` per measure and cost
(``dissimilarity_rsa``, ``dissimilarity_rsa_mean``), ``<task>_test_<metric>`` and
``<task>_val_<metric>`` (each task's main metric), ``delta_mtl_test``, ``delta_mtl_val`` (Δ_MTL
in percent against the run's single-task baselines, survey Eq. 10) and ``train_seconds``
(the one timing column). A tree that plays several roles (the RSA and the FAFS tree of a
budget, a random draw that is also the RSA tree) has a row per role, all with the same
tree id and the same numbers. Rows are in plan order, seed by seed within a role.

:func:`read_trees_csv` reads the file back with numbers as floats and an empty budget as
None: the summary (:mod:`branchnet.study.summary`) is computed from these rows alone.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from branchnet.atomic import atomic_write_text
from branchnet.errors import BadInput
from branchnet.study.jobs import Job, StudyPlan, StudyTree

#: Columns that measure time, not results: they differ between runs of the same study.
TIMING_COLUMNS = ("train_seconds",)
#: Columns holding text.
TEXT_COLUMNS = ("tree_id", "source", "groups", "partitions")


def metric_columns(tasks: Sequence[Any]) -> list[tuple[str, str, str]]:
    """``(column, task, split)`` of every task's main metric: ``seg_test_miou``, ``seg_val_miou``."""
    out = []
    for split in ("test", "val"):
        for task in tasks:
            out.append((f"{task.name}_{split}_{task.main_metric}", task.name, split))
    return out


def columns(plan: StudyPlan, tasks: Sequence[Any]) -> list[str]:
    """The header of trees.csv for ``plan`` and its :class:`~branchnet.tasks.Task` objects."""
    return header([s.column for s in plan.scorers], tasks)


def header(dissimilarity_columns: Sequence[str], tasks: Sequence[Any]) -> list[str]:
    """The columns of a trees.csv with these ``dissimilarity_<scorer>`` columns."""
    return (["tree_id", "source", "budget", "seed", "groups", "partitions", "params", "flops"]
            + list(dissimilarity_columns) + [c for c, _, _ in metric_columns(tasks)]
            + ["delta_mtl_test", "delta_mtl_val", *TIMING_COLUMNS])


def study_rows(plan: StudyPlan, metrics: Mapping[Job, Mapping[str, Any]], tasks: Sequence[Any],
               baselines: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of trees.csv.

    ``metrics`` maps each job to its network's metrics.json; ``tasks`` are the config's
    :class:`~branchnet.tasks.Task` objects; ``baselines`` maps each task to its single-task
    model's metrics.json (``runs.find_baselines(...).metrics``). Δ_MTL is computed here from
    the network's and the baselines' main metrics, so it is always against the baselines
    found now.
    """
    dissimilarity = {tid: {s.column: s.dissimilarity(tree.partitions) for s in plan.scorers}
                     for tid, tree in plan.trees.items()}
    rows = []
    for role in plan.roles:
        tree = plan.trees[role.tree_id]
        for seed in plan.seeds:
            job = Job(role.tree_id, seed)
            if job not in metrics:
                raise BadInput(f"network {role.tree_id} seed {seed} is not trained; rerun `branchnet evaluate`")
            rows.append(network_row(tree, role.source, role.budget, seed, metrics[job], tasks, baselines,
                                    dissimilarity[tree.tree_id]))
    return rows


def network_row(tree: StudyTree, source: str, budget: int | None, seed: int, metrics: Mapping[str, Any],
                tasks: Sequence[Any], baselines: Mapping[str, Mapping[str, Any]],
                dissimilarity: Mapping[str, float]) -> dict[str, Any]:
    """One row of trees.csv: the network of ``tree`` trained with evaluation seed ``seed`` (its
    ``metrics``, a metrics.json), in the role ``source`` for ``budget``; ``dissimilarity`` maps
    each ``dissimilarity_<scorer>`` column to the tree's value."""
    from branchnet.tasks import multi_task_delta

    row: dict[str, Any] = {"tree_id": tree.tree_id, "source": source, "budget": budget, "seed": seed,
                           "groups": tree.groups, "partitions": tree.compact, "params": tree.params,
                           "flops": tree.flops, **dissimilarity}
    for column, task, split in metric_columns(tasks):
        main = next(t.main_metric for t in tasks if t.name == task)
        row[column] = metrics[split][task][main]
    for split in ("test", "val"):
        base = {t: b[split][t] for t, b in baselines.items()}
        row[f"delta_mtl_{split}"] = multi_task_delta(metrics[split], base, tasks)["delta_mtl"]
    row["train_seconds"] = metrics.get("train_seconds")
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact form: the file reads back to the same floats
    return str(value)


def trees_csv_text(rows: Sequence[Mapping[str, Any]], header: Sequence[str]) -> str:
    """The text of a trees.csv of ``rows`` under ``header`` (floats in their exact shortest form)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in header])
    return buffer.getvalue()


def write_trees_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], header: Sequence[str]) -> Path:
    """Write ``rows`` under ``header`` atomically (:func:`trees_csv_text`)."""
    return atomic_write_text(path, trees_csv_text(rows, header))


def read_trees_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a trees.csv: text columns as str, ``seed`` as int, every other cell a float
    (an empty cell None)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path} does not exist; run `branchnet evaluate` first")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = []
        for raw in reader:
            row: dict[str, Any] = {}
            for key, cell in raw.items():
                if key in TEXT_COLUMNS:
                    row[key] = cell
                elif cell == "" or cell is None:
                    row[key] = None
                elif key == "seed":
                    row[key] = int(cell)
                else:
                    try:
                        row[key] = float(cell)
                    except ValueError:
                        raise BadInput(f"{path}: column {key} holds {cell!r}, not a number") from None
            rows.append(row)
    return rows

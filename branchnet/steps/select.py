"""``branchnet select``: budgeted task-grouping selection among trained candidate networks, as a
library call (Standley et al., Algorithm 1; docs/select.md).

:func:`select` reads the candidates table (and a test table), optionally predicts the groups of
three or more tasks from the pairs (HOA), solves the budget and/or the sweep with exact branch
and bound, scores the choice on the test table, writes ``--out`` and the sweep plot, and returns
everything the command prints. The parsers of the command's option strings are here too, so a
Python user gets the same checks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from branchnet.atomic import atomic_write_json
from branchnet.errors import BadInput, unknown_choice
from branchnet.selection import select_networks, select_sweep
from branchnet.selection.candidates import CandidateTable
from branchnet.selection.report import BudgetResult, budget_results
from branchnet.selection.tables import match_tables, read_table
from branchnet.units import parse_budget


@dataclass
class SelectResult:
    """What :func:`select` found and wrote.

    Attributes:
        table: the candidates (with the HOA's predicted groups when asked for).
        single: the result at ``budget`` (None without one).
        rows: the results of the sweep's budgets (None without a sweep).
        notes: remarks for the user (what the HOA predicted).
        written: the files written (``out``, the sweep plot).
    """

    table: CandidateTable
    single: BudgetResult | None
    rows: list[BudgetResult] | None
    notes: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def to_json(self) -> Any:
        """The docs/design.md object (a list of them for a sweep without a budget)."""
        return self.single.to_json() if self.single is not None else [r.to_json() for r in self.rows or []]


def select(candidates: str | os.PathLike, budget: str | float | None = None, fmt: str = "csv",
           tasks: str | None = None, test: str | os.PathLike | None = None, predict_higher_order: bool = False,
           sweep: str | None = None, draws: int = 1000, seed: int = 0, baselines: bool = True,
           max_loss: Sequence[str] = (), out: str | os.PathLike | None = None,
           plot: str | os.PathLike | None = None, time_limit: float | str | None = None,
           progress: Any = None) -> SelectResult:
    """Choose the set of trained networks of least total loss within ``budget`` (and/or for every
    budget of ``sweep``, ``START:STOP:STEP``), as ``branchnet select`` does.

    Writes ``out`` (the JSON result) and, with a sweep, its plot (``plot``, default
    ``<candidates>-sweep.png``) once everything is known to be valid. ``time_limit``: seconds the
    search may take per budget (then the best selection found, marked not proven optimal with its
    gap); ``progress``: a callback of the search's reports (:mod:`branchnet.selection.live`).
    Raises :class:`BadInput` (nothing written) for bad tables, budgets, limits or options.
    """
    from branchnet.selection.branch_bound import check_time_limit

    if budget is None and sweep is None:
        raise BadInput("give --budget B (e.g. --budget 2.5) or --sweep START:STOP:STEP (e.g. --sweep 1:5:0.5)")
    if draws < 1:
        raise BadInput(f"--random {draws}: draw at least 1 random selection per budget (or pass --no-baselines)")
    if seed < 0:
        raise BadInput(f"--seed {seed}: give a seed >= 0")
    candidates = Path(candidates)
    budget_value = parse_budget(budget, "--budget") if budget is not None else None
    budgets = parse_sweep(sweep) if sweep is not None else None
    seconds = check_time_limit(time_limit, "--time-limit")
    task_names = parse_tasks(tasks) if tasks is not None else None
    table = read_table(candidates, fmt, task_names)
    test_table = read_table(test, fmt, task_names) if test is not None else None
    predicted = None
    notes = []
    if predict_higher_order:
        from branchnet.selection.higher_order import predict_from_pairs

        hoa = predict_from_pairs(table)
        table, predicted = hoa.table, hoa.predicted
        count = len(hoa.predicted)
        notes.append(f"higher-order approximation: {count} group{'s' if count != 1 else ''} of 3+ tasks predicted "
                     f"from the pair networks ({hoa.dropped} measured one{'s' if hoa.dropped != 1 else ''} set aside)")
        if hoa.missing_pairs:
            notes.append("no network for the pair(s) " + ", ".join("+".join(p) for p in hoa.missing_pairs)
                         + ": their groups are averaged over the pairs there are")
    if test_table is not None:
        match_tables(table, test_table, f"--test {test}")
    limits = parse_max_loss(list(max_loss), table.tasks)

    selection = (select_networks(table, budget_value, limits, time_limit=seconds, progress=progress)
                 if budget_value is not None else None)
    swept = (select_sweep(table, budgets, limits, time_limit=seconds, progress=progress)
             if budgets is not None else None)
    single = budget_results(table, [selection], test_table, predicted)[0] if selection is not None else None
    rows = (budget_results(table, swept, test_table, predicted, sweep=True, baselines=baselines, draws=draws,
                           seed=seed) if swept is not None else None)
    result = SelectResult(table, single, rows, notes)

    # Everything is known to be valid: now write.
    if out is not None:
        result.written.append(atomic_write_json(out, result.to_json()))
    if rows is not None:
        from branchnet.selection.plot import plot_results

        plot_path = Path(plot) if plot is not None else candidates.with_name(f"{candidates.stem}-sweep.png")
        plot_results(rows, plot_path)
        result.written.append(plot_path)
    return result


def parse_tasks(text: str) -> list[str]:
    """``"seg,depth"`` -> ``["seg", "depth"]`` (names checked by the table reader)."""
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise BadInput("--tasks is empty; give the task columns' names, e.g. --tasks seg,depth,normals")
    return names


def parse_sweep(text: str) -> list[float]:
    """``"1:5:0.5"`` -> ``[1, 1.5, ..., 5]`` (STOP included when the steps land on it)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise BadInput(f"--sweep '{text}' must be START:STOP:STEP, e.g. 1:5:0.5")
    start, stop, step = (parse_budget(p, f"--sweep {name}") for p, name in zip(parts, ("start", "stop", "step")))
    if stop < start:
        raise BadInput(f"--sweep '{text}': STOP {stop:g} is below START {start:g}; give START <= STOP")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > 1000:
        raise BadInput(f"--sweep '{text}' has {count} budgets; use a larger STEP (at most 1000 budgets)")
    return [round(start + i * step, 12) for i in range(count)]


def parse_max_loss(items: list[str], tasks: tuple[str, ...]) -> dict[str, float]:
    """``["seg=0.3", ...]`` -> ``{"seg": 0.3}``, checking the task names against ``tasks``."""
    limits: dict[str, float] = {}
    for item in items:
        task, sep, value = item.rpartition("=")
        task = task.strip()
        if not sep or not task:
            raise BadInput(f"--max-loss '{item}' must be TASK=VALUE, e.g. --max-loss {tasks[0]}=0.3")
        if task not in tasks:
            raise unknown_choice("task in --max-loss", task, tasks)
        try:
            limit = float(value)
        except ValueError:
            raise BadInput(f"--max-loss '{item}': '{value}' is not a number") from None
        if not math.isfinite(limit):
            raise BadInput(f"--max-loss '{item}': the limit must be a finite number")
        if task in limits:
            raise BadInput(f"--max-loss gives task '{task}' twice; give one limit per task")
        limits[task] = limit
    return limits

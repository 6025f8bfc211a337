"""Candidate networks and the candidates CSV (docs/design.md, "File formats").

A candidate is a trained network with an inference cost (relative: 1 = one full-width
single-task network, the paper's "standard network time") and a loss on each task it
solves (Standley et al., Sec. 3: ``L(n, t)``, infinite where ``n`` does not solve ``t``).

The CSV has the header ``name,cost,<task>...``; a cell holds that network's loss on that
task (lower is better) or is empty where the network does not solve it::

    name,cost,seg,depth,normals
    seg+depth+normals,1,0.51,0.22,0.13
    seg,1,0.49,,
    seg@0.5,0.5,0.53,,
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from branchnet.errors import BadInput
from branchnet.atomic import atomic_write_text, read_user_text

HEADER_START = ("name", "cost")


@dataclass(frozen=True)
class Candidate:
    """One trained network.

    Attributes:
        name: unique name, e.g. ``"seg+depth"`` or ``"seg@0.5"`` (see :func:`group_name`).
        cost: inference cost relative to a full-width single-task network (>= 0).
        losses: ``{task: loss}`` for every task the network solves (finite, >= 0).
    """

    name: str
    cost: float
    losses: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost", float(self.cost))
        object.__setattr__(self, "losses", {str(t): float(v) for t, v in self.losses.items()})

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this network solves, in the order of ``losses``."""
        return tuple(self.losses)


@dataclass(frozen=True)
class CandidateTable:
    """The candidate set ``C_0`` of Standley et al. (Sec. 3.2): tasks and networks.

    Attributes:
        tasks: the task names (the CSV's task columns), in order.
        candidates: the networks, in file order (that order breaks the last ties).
    """

    tasks: tuple[str, ...]
    candidates: tuple[Candidate, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        object.__setattr__(self, "candidates", tuple(self.candidates))
        validate_table(self)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.candidates)

    def costs(self) -> np.ndarray:
        """Costs, float64 (M,)."""
        return np.array([c.cost for c in self.candidates], dtype=np.float64).reshape(-1)

    def loss_matrix(self) -> np.ndarray:
        """Losses, float64 (M, T): ``[n, t]`` is network n's loss on task t, ``inf`` where n does not solve t."""
        index = {t: j for j, t in enumerate(self.tasks)}
        out = np.full((len(self.candidates), len(self.tasks)), np.inf)
        for i, cand in enumerate(self.candidates):
            for task, loss in cand.losses.items():
                out[i, index[task]] = loss
        return out

    def candidate(self, name: str) -> Candidate:
        """The candidate called ``name`` (BadInput when there is none)."""
        for cand in self.candidates:
            if cand.name == name:
                return cand
        from branchnet.errors import unknown_choice
        raise unknown_choice("network", name, self.names)

    def with_candidates(self, extra: Iterable[Candidate]) -> "CandidateTable":
        """A new table with ``extra`` appended; tasks they solve that are new become new columns."""
        extra = list(extra)
        tasks = list(self.tasks)
        for cand in extra:
            tasks.extend(t for t in cand.losses if t not in tasks)
        return CandidateTable(tuple(tasks), self.candidates + tuple(extra))


def group_name(tasks: Sequence[str], width: float = 1.0) -> str:
    """The conventional name of a network trained on ``tasks``: ``"seg+depth"``, ``"seg@0.5"`` at half width."""
    base = "+".join(tasks)
    return base if float(width) == 1.0 else f"{base}@{float(width):g}"


def _check_number(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise BadInput(f"{what} is {value}; it must be a finite number >= 0")
    if value < 0:
        raise BadInput(f"{what} is {value:g}; it must be >= 0")


def validate_table(table: CandidateTable) -> None:
    """Check a table built in code (the CSV reader gives line-precise messages before this).

    Raises BadInput for: no tasks, duplicate task or network names, a negative or
    non-finite cost or loss, a loss for a task that is not a column, a network that
    solves no task, a task no network solves.
    """
    if not table.tasks:
        raise BadInput("the candidate table has no task columns; expected name,cost,<task>...")
    seen: set[str] = set()
    for task in table.tasks:
        if not task:
            raise BadInput("a task name is empty; every task column needs a name")
        if task in seen:
            raise BadInput(f"task '{task}' appears twice; task names must be unique")
        seen.add(task)
    if not table.candidates:
        raise BadInput("the candidate table has no networks; add at least one row")
    names: set[str] = set()
    for cand in table.candidates:
        if not cand.name:
            raise BadInput("a network has an empty name; every network needs a name")
        if cand.name in names:
            raise BadInput(f"network '{cand.name}' appears twice; network names must be unique")
        names.add(cand.name)
        _check_number(cand.cost, f"network '{cand.name}': cost")
        if not cand.losses:
            raise BadInput(f"network '{cand.name}' solves no task; give a loss for at least one task")
        for task, loss in cand.losses.items():
            if task not in seen:
                raise BadInput(f"network '{cand.name}' has a loss for '{task}', which is not a task column "
                               f"({', '.join(table.tasks)})")
            _check_number(loss, f"network '{cand.name}': loss on '{task}'")
    solved = {t for cand in table.candidates for t in cand.losses}
    for task in table.tasks:
        if task not in solved:
            raise BadInput(f"no network solves task '{task}'; add a network with a loss for it or drop the column")


def parse_number(text: str, where: str, what: str) -> float:
    """A finite number >= 0 read from a table cell; :class:`BadInput` naming ``where`` otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{where}: {what} '{text}' is not a number") from None
    if not math.isfinite(value):
        raise BadInput(f"{where}: {what} '{text}' is not a finite number")
    if value < 0:
        raise BadInput(f"{where}: {what} {text} is negative; it must be >= 0")
    return value


def read_candidates(path: str | os.PathLike) -> CandidateTable:
    """Read and validate a candidates CSV (header ``name,cost,<task>...``).

    Every problem is a :class:`BadInput` naming the file and the line (and column) at
    fault: an empty file, a header that does not start ``name,cost`` or has no task
    column, an empty or duplicate task column, a row with the wrong number of cells, an
    empty or duplicate network name, a cost or loss that is not a number, NaN,
    infinite or negative, a network that solves no task, a task no network solves.
    """
    path = Path(path)
    text = read_user_text(path, "candidates file", "a CSV file")

    reader = csv.reader(io.StringIO(text))
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise BadInput(f"{path} is empty; expected a header 'name,cost,<task>...' and one row per network")
        header_line = reader.line_num
        header = [cell.strip() for cell in header]
        where = f"{path} line {header_line}"
        if tuple(h.lower() for h in header[:2]) != HEADER_START:
            raise BadInput(f"{where}: the header must start with 'name,cost' followed by the task columns, "
                           f"got '{','.join(header[:3])}'")
        tasks = header[2:]
        if not tasks:
            raise BadInput(f"{where}: the header has no task columns; expected name,cost,<task>...")
        for j, task in enumerate(tasks, start=3):
            if not task:
                raise BadInput(f"{where}, column {j}: the task column has no name")
        seen: dict[str, int] = {}
        for j, task in enumerate(tasks, start=3):
            if task in seen:
                raise BadInput(f"{where}: task column '{task}' appears twice (columns {seen[task]} and {j}); "
                               "task names must be unique")
            seen[task] = j

        candidates: list[Candidate] = []
        lines: dict[str, int] = {}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines carry nothing
            line = reader.line_num
            where = f"{path} line {line}"
            if len(row) != len(header):
                raise BadInput(f"{where}: {len(row)} cells, but the header has {len(header)} "
                               f"(name,cost,{','.join(tasks)})")
            name = row[0].strip()
            if not name:
                raise BadInput(f"{where}, column 'name': the network name is empty")
            if name in lines:
                raise BadInput(f"{where}, column 'name': network '{name}' already appears on line {lines[name]}; "
                               "network names must be unique")
            lines[name] = line
            cost_text = row[1].strip()
            if not cost_text:
                raise BadInput(f"{where}, column 'cost': the cost of '{name}' is empty")
            cost = parse_number(cost_text, f"{where}, column 'cost'", "cost")
            losses: dict[str, float] = {}
            for task, cell in zip(tasks, row[2:]):
                cell = cell.strip()
                if cell:
                    losses[task] = parse_number(cell, f"{where}, column '{task}'", "loss")
            if not losses:
                raise BadInput(f"{where}: network '{name}' solves no task (every loss cell is empty)")
            candidates.append(Candidate(name, cost, losses))
    except csv.Error as exc:
        raise BadInput(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None

    if not candidates:
        raise BadInput(f"{path} has a header but no networks; add one row per network")
    for task in tasks:
        if not any(task in cand.losses for cand in candidates):
            raise BadInput(f"{path}, column '{task}': no network solves this task (the column is empty); "
                           "add a network for it or drop the column")
    return CandidateTable(tuple(tasks), tuple(candidates))


def format_number(value: float) -> str:
    """The shortest text that reads back as the same float (``1.0 -> '1'``)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def candidates_csv(table: CandidateTable) -> str:
    """The CSV text of ``table`` (exact round trip through :func:`read_candidates`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "cost", *table.tasks])
    for cand in table.candidates:
        writer.writerow([cand.name, format_number(cand.cost),
                         *(format_number(cand.losses[t]) if t in cand.losses else "" for t in table.tasks)])
    return buffer.getvalue()


def write_candidates(path: str | os.PathLike, table: CandidateTable) -> Path:
    """Write ``table`` as a candidates CSV, atomically."""
    return atomic_write_text(path, candidates_csv(table))

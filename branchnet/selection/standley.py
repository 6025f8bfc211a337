"""The tables of Standley et al.'s release (``network_selection/results*.txt``) as candidates.

The authors publish their measured losses as tab-separated text, one network a line and
one task a column, with no header:

* the first line holds the half-size single-task networks (cost 0.5, "half the
  computational cost of a standard network", Sec. 3.1): the cell in task t's column is
  the loss of the half-size network trained on t alone;
* every further line is one full-size network (cost 1, one "standard network time",
  Sec. 4.2) with its loss on each task it was trained on, and a blank cell for the tasks
  it was not: the 31 groups of 5 tasks in the paper's setting.

The task columns of the release are, in order, semantic segmentation, depth, surface
normals, keypoints and edges (:data:`RELEASE_TASKS`); ``tasks`` names them otherwise.
A network is named after the tasks it serves, as branchnet names its own
(:func:`~branchnet.selection.candidates.group_name`): ``depth+normals``, and
``segmentation@0.5`` for a half-size one; a later line serving the same tasks as an
earlier one gets ``#2``, ``#3``... So two tables of the same networks (validation and
test, ``results.txt`` and ``results_test.txt``) give the same names line for line, and
a predicted group (:func:`~branchnet.selection.higher_order.predict_from_pairs`) is
named as the measured network of the same tasks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from branchnet.atomic import read_user_text
from branchnet.errors import BadInput
from branchnet.selection.candidates import Candidate, CandidateTable, group_name, parse_number

#: The release's task columns, in order (Sec. 4.1).
RELEASE_TASKS = ("segmentation", "depth", "normals", "keypoints", "edges")

#: Cost of a first-line (half-size) network and of every other line's network.
HALF_COST, FULL_COST = 0.5, 1.0


def _read_text(path: Path) -> str:
    return read_user_text(path, "table", "a tab-separated results file")


def _cell(text: str, where: str) -> float | None:
    """A cell's loss (None when blank); BadInput for anything but a finite number >= 0."""
    text = text.strip()
    return parse_number(text, where, "loss") if text else None


def read_standley(path: str | os.PathLike, tasks: Sequence[str] | None = None) -> CandidateTable:
    """Read one of the release's tab-separated tables (see the module docstring).

    Args:
        path: the results file.
        tasks: the names of its task columns, in order (default :data:`RELEASE_TASKS`,
            which needs a table of five columns).

    Returns:
        The candidates: the first line's networks (cost 0.5) in column order, then one
        network of cost 1 per further line, in file order.

    Raises:
        BadInput: naming the file, line and column: a missing or unreadable file, an
            empty one, task names that repeat or are empty, a line with another number
            of cells than the first (ragged), a cell that is not a number, NaN or
            infinite, a negative loss, a table with fewer (or more) task columns than
            ``tasks`` names, a line of blank cells, a task no network solves.
    """
    path = Path(path)
    text = _read_text(path)
    lines = [(number, line.rstrip("\r\n")) for number, line in enumerate(text.splitlines(), start=1)]
    lines = [(number, line) for number, line in lines if line.strip(" ")]  # blank lines carry nothing
    if not lines:
        raise BadInput(f"{path} is empty; expected tab-separated losses, one network a line "
                       "(the first line: the half-size single-task networks)")
    width = len(lines[0][1].split("\t"))
    if width == 1 and "," in lines[0][1]:
        raise BadInput(f"{path} line {lines[0][0]} has commas and no tabs: it looks like a candidates CSV, "
                       "not a tab-separated results table; leave out --format standley")
    names = tuple(str(t).strip() for t in (RELEASE_TASKS if tasks is None else tasks))
    if any(not t for t in names):
        raise BadInput("a task name is empty; give one name per column, e.g. --tasks "
                       + ",".join(RELEASE_TASKS))
    repeated = sorted({t for t in names if names.count(t) > 1})
    if repeated:
        raise BadInput(f"task '{repeated[0]}' is named twice; task names must be unique")
    if width != len(names):
        given = "the release's " if tasks is None else ""
        fewer = "fewer" if width < len(names) else "more"
        raise BadInput(f"{path} line {lines[0][0]} has {width} task column{'s' if width != 1 else ''}, "
                       f"{fewer} than the {len(names)} {given}task names ({', '.join(names)}); "
                       f"name exactly its {width} columns with --tasks")

    candidates: list[Candidate] = []
    seen: dict[str, int] = {}
    for index, (number, line) in enumerate(lines):
        cells = line.split("\t")
        where = f"{path} line {number}"
        if len(cells) != width:
            raise BadInput(f"{where}: {len(cells)} tab-separated cells, but the first line has {width}; "
                           "every line needs one cell per task (blank where the network does not solve it)")
        values = {task: _cell(cell, f"{where}, column {j} ({task})")
                  for j, (task, cell) in enumerate(zip(names, cells), start=1)}
        served = {task: value for task, value in values.items() if value is not None}
        if not served:
            raise BadInput(f"{where}: every cell is blank; a line must give a loss for at least one task")
        if index == 0:  # one half-size network per filled column
            for task, value in served.items():
                candidates.append(Candidate(group_name([task], HALF_COST), HALF_COST, {task: value}))
            continue
        name = group_name(list(served))
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        candidates.append(Candidate(name, FULL_COST, served))
    for task in names:
        if not any(task in cand.losses for cand in candidates):
            raise BadInput(f"{path}, column {names.index(task) + 1} ({task}): no network solves this task "
                           "(the column is blank on every line)")
    return CandidateTable(names, tuple(candidates))

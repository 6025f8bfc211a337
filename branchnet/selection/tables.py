"""Reading a candidates table in either format, and matching a second table of the same networks.

Two formats (docs/design.md, "File formats"): branchnet's CSV (``name,cost,<task>...``,
:func:`~branchnet.selection.candidates.read_candidates`) and the tab-separated tables
of Standley et al.'s release (:func:`~branchnet.selection.standley.read_standley`).

A second table of the same networks, measured on another split (the paper selects on
validation losses and reports test losses, Sec. 4.2), must hold every network of the
first under the same name (for the release's tables: the same line, see
:mod:`~branchnet.selection.standley`), solving the same tasks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from branchnet.errors import BadInput, unknown_choice
from branchnet.selection.candidates import CandidateTable, read_candidates
from branchnet.selection.solution import Selection, evaluate
from branchnet.selection.standley import read_standley

#: The formats ``read_table`` knows.
FORMATS = ("csv", "standley")


def _looks_tab_separated(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    return "\t" in first and "," not in first


def read_table(path: str | os.PathLike, fmt: str = "csv", tasks: Sequence[str] | None = None) -> CandidateTable:
    """Read a candidates table: ``fmt`` "csv" (branchnet's) or "standley" (the release's).

    ``tasks`` names the task columns of a "standley" table (default: the release's
    five); a CSV names its tasks in its header, so ``tasks`` is refused there.
    """
    if fmt not in FORMATS:
        raise unknown_choice("table format", fmt, FORMATS)
    path = Path(path)
    if fmt == "standley":
        return read_standley(path, tasks)
    if tasks is not None:
        raise BadInput("--tasks names the columns of a tab-separated results table (--format standley); "
                       "a CSV names its tasks in its header")
    if path.is_file() and _looks_tab_separated(path):
        raise BadInput(f"{path} is tab-separated like the results*.txt tables of Standley et al.'s release, "
                       "not a candidates CSV; pass --format standley")
    return read_candidates(path)


def _listing(names: Sequence[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def match_tables(table: CandidateTable, other: CandidateTable, what: str = "the --test table") -> None:
    """Check that ``other`` measures every network of ``table`` (same name, same tasks).

    Networks of ``other`` that ``table`` lacks are ignored. Raises BadInput saying
    which tasks or networks are missing, or which network solves other tasks there.
    """
    missing_tasks = [t for t in table.tasks if t not in other.tasks]
    extra_tasks = [t for t in other.tasks if t not in table.tasks]
    if missing_tasks or extra_tasks:
        parts = []
        if missing_tasks:
            parts.append(f"lacks task{'s' if len(missing_tasks) > 1 else ''} {', '.join(missing_tasks)}")
        if extra_tasks:
            parts.append(f"has task{'s' if len(extra_tasks) > 1 else ''} {', '.join(extra_tasks)} the candidates lack")
        raise BadInput(f"{what} does not match the candidates: it {' and '.join(parts)} "
                       f"(candidates: {', '.join(table.tasks)})")
    present = set(other.names)
    missing = [name for name in table.names if name not in present]
    if missing:
        raise BadInput(f"{what} does not match the candidates: {len(missing)} of the {len(table.names)} candidate "
                       f"networks {'is' if len(missing) == 1 else 'are'} missing there: {_listing(missing)}; "
                       "it must measure every candidate network")
    for cand in table.candidates:
        there = other.candidate(cand.name)
        if set(there.losses) != set(cand.losses):
            raise BadInput(f"{what} does not match the candidates: network '{cand.name}' solves "
                           f"{', '.join(cand.tasks)} in the candidates but {', '.join(there.tasks)} there")


def rescore(selection: Selection, other: CandidateTable) -> Selection:
    """The chosen networks scored on ``other``, a table of the same networks (:func:`match_tables`).

    As the paper reports its solutions (Sec. 4.2): each task is served by the chosen
    network with the least loss on ``other`` (which may not be the one that served it
    in the selection; ties: the earlier network of ``other``); the total is the sum
    over tasks. Budget and cost are the selection's.
    """
    rows = [other.names.index(name) for name in selection.networks]
    scored = evaluate(other, rows, selection.budget)
    tasks = list(selection.assignment)
    return Selection(budget=selection.budget, cost=selection.cost, total_loss=scored.total_loss,
                     networks=selection.networks, assignment={t: scored.assignment[t] for t in tasks},
                     task_losses={t: scored.task_losses[t] for t in tasks})

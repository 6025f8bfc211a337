"""``branchnet select`` and ``branchnet groupings``: budgeted task-grouping selection."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import OutOption, app


@app.command("select")
def select(
    candidates: Annotated[Path, typer.Option(
        "--candidates", help="Candidates CSV: name,cost,<task>... (a loss per task a network solves).")],
    budget: Annotated[Optional[str], typer.Option(
        "--budget", "-b", help="Largest total cost, relative to one full single-task network (e.g. 2.5).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the result as JSON on stdout.")] = False,
    sweep: Annotated[Optional[str], typer.Option(
        "--sweep", help="Also solve every budget START:STOP:STEP (e.g. 1:5:0.5); print a table and plot it.")] = None,
    max_loss: Annotated[Optional[list[str]], typer.Option(
        "--max-loss", help="Hard limit TASK=VALUE on a task's served loss (repeatable).")] = None,
    out: OutOption = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Where the sweep plot goes (default: <candidates>-sweep.png beside the CSV).")] = None,
) -> None:
    """Choose the set of trained networks of least total loss within an inference budget.

    Exact branch and bound (Standley et al., Algorithm 1). With --budget prints the chosen
    networks, which network serves each task, the cost and the total loss; with --sweep a
    table of the selections over a range of budgets and a plot. --json prints the DESIGN.md
    object (for --sweep without --budget: a list of them); --out saves the same JSON.
    """
    import json

    from branchnet.errors import BadInput
    from branchnet.files import atomic_write_json
    from branchnet.progress import say
    from branchnet.selection import read_candidates, select_networks, select_sweep
    from branchnet.units import parse_budget

    if budget is None and sweep is None:
        raise BadInput("give --budget B (e.g. --budget 2.5) or --sweep START:STOP:STEP (e.g. --sweep 1:5:0.5)")
    budget_value = parse_budget(budget, "--budget") if budget is not None else None
    budgets = parse_sweep(sweep) if sweep is not None else None
    table = read_candidates(candidates)
    limits = parse_max_loss(max_loss or [], table.tasks)

    selection = select_networks(table, budget_value, limits) if budget_value is not None else None
    swept = select_sweep(table, budgets, limits) if budgets is not None else None
    result = selection.to_json() if selection is not None else [s.to_json() for s in swept]

    # Everything is known to be valid: now write.
    if out is not None:
        atomic_write_json(out, result)
    plot_path = None
    if swept is not None:
        from branchnet.selection.plot import plot_sweep
        plot_path = plot if plot is not None else candidates.with_name(f"{candidates.stem}-sweep.png")
        plot_sweep(swept, plot_path)

    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        from rich.console import Console

        console = Console(highlight=False)
        if selection is not None:
            print_selection(console, selection, table)
        if swept is not None:
            print_sweep(console, swept)
    if out is not None:
        say(f"wrote {out}")
    if plot_path is not None:
        say(f"wrote {plot_path}")


def parse_sweep(text: str) -> list[float]:
    """``"1:5:0.5"`` -> ``[1, 1.5, ..., 5]`` (STOP included when the steps land on it)."""
    from branchnet.errors import BadInput
    from branchnet.units import parse_budget

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
    from branchnet.errors import BadInput, unknown_choice

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


def _served(selection, network: str) -> str:
    return ", ".join(f"{t} {selection.task_losses[t]:.4g}" for t in selection.served_tasks(network))


def print_selection(console, selection, table) -> None:
    """The chosen networks, what each serves, the cost and total loss (rich table on stdout)."""
    from rich.table import Table

    view = Table(title=f"Selection at budget {selection.budget:g}: cost {selection.cost:g}, "
                       f"total loss {selection.total_loss:.6g}")
    view.add_column("network")
    view.add_column("cost", justify="right")
    view.add_column("serves (task loss)")
    for name in selection.networks:
        view.add_row(name, f"{table.candidate(name).cost:g}", _served(selection, name))
    console.print(view)
    tasks = Table(title="Which network serves each task")
    tasks.add_column("task")
    tasks.add_column("network")
    tasks.add_column("loss", justify="right")
    for task, network in selection.assignment.items():
        tasks.add_row(task, network, f"{selection.task_losses[task]:.6g}")
    console.print(tasks)


def print_sweep(console, selections) -> None:
    """Groups and total loss per budget, like Standley et al.'s Tables 6 and 7."""
    from rich.table import Table

    view = Table(title="Best selection per budget")
    view.add_column("budget", justify="right")
    view.add_column("cost", justify="right")
    view.add_column("total loss", justify="right")
    view.add_column("networks (tasks each serves)")
    for s in selections:
        groups = "; ".join(f"{n} ({', '.join(s.served_tasks(n))})" for n in s.networks)
        view.add_row(f"{s.budget:g}", f"{s.cost:g}", f"{s.total_loss:.6g}", groups)
    console.print(view)


@app.command("groupings")
def groupings() -> None:
    """Train candidate networks for groups of tasks (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("groupings is not implemented yet")

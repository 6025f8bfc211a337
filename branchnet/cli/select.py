"""``branchnet select``: budgeted task-grouping selection (the step is :mod:`branchnet.steps.select`;
this module parses the options and prints the result)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import OutOption, QuietOption, app
from branchnet.moved import moved_attribute


@app.command("select")
def select(
    candidates: Annotated[Path, typer.Option(
        "--candidates", help="Candidates table: a CSV name,cost,<task>... (a loss per task a network solves), "
                             "or with --format standley a results*.txt of Standley et al.'s release.")],
    budget: Annotated[Optional[str], typer.Option(
        "--budget", "-b", help="Largest total cost, relative to one full single-task network (e.g. 2.5).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="Table format: csv (branchnet's) or standley (tab-separated, no header: the first line "
                         "the half-size single-task networks at cost 0.5, every other line a network of cost 1).")
    ] = "csv",
    tasks: Annotated[Optional[str], typer.Option(
        "--tasks", help="Names of a standley table's task columns, comma-separated (default: "
                        "segmentation,depth,normals,keypoints,edges).")] = None,
    test: Annotated[Optional[Path], typer.Option(
        "--test", help="A second table of the same networks (e.g. test losses) to score the selection on; "
                       "same format, networks matched by name (standley: by line).")] = None,
    predict_higher_order: Annotated[bool, typer.Option(
        "--predict-higher-order", help="Keep the networks of 1-2 tasks and predict every larger group from the "
                                       "pairs (the higher-order approximation, HOA).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the result as JSON on stdout.")] = False,
    sweep: Annotated[Optional[str], typer.Option(
        "--sweep", help="Also solve every budget START:STOP:STEP (e.g. 1:5:0.5); print a table with the random "
                        "and worst baselines and plot it.")] = None,
    draws: Annotated[int, typer.Option(
        "--random", help="Random selections drawn per budget for the sweep's random baseline.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random baseline's draws.")] = 0,
    baselines: Annotated[bool, typer.Option(
        "--baselines/--no-baselines", help="Compute the random and worst baselines in the sweep.")] = True,
    max_loss: Annotated[Optional[list[str]], typer.Option(
        "--max-loss", help="Hard limit TASK=VALUE on a task's served loss (repeatable).")] = None,
    out: OutOption = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Where the sweep plot goes (default: <candidates>-sweep.png beside the table).")] = None,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time-limit", help="Seconds the search may take per budget; then the best selection found is returned "
                             "with its proven gap, marked not proven optimal.")] = None,
    quiet: QuietOption = False,
) -> None:
    """Choose the set of trained networks of least total loss within an inference budget.

    Exact branch and bound (Standley et al., Algorithm 1). With --budget prints the chosen
    networks, which network serves each task, the cost and the total loss (with --test also
    their loss on the test table); with --sweep a table over a range of budgets (where the
    choice changes, the random and worst baselines) and a plot. --json prints the docs/design.md
    object (for --sweep without --budget: a list of them); --out saves the same JSON.
    While it searches, stderr shows the best total loss found, the proven lower bound and
    the gap (not with --quiet or --json).
    """
    import json

    from branchnet.progress import say
    from branchnet.selection.branch_bound import check_time_limit
    from branchnet.selection.live import search_display
    from branchnet.steps.select import select as run

    seconds = check_time_limit(time_limit, "--time-limit")
    with search_display(not (quiet or json_out), seconds) as progress:
        result = run(candidates, budget, fmt, tasks, test, predict_higher_order, sweep, draws, seed, baselines,
                     max_loss or [], out, plot, time_limit=seconds, progress=progress)
    for note in result.notes:
        say(note)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        import sys

        from rich.console import Console

        # Piped output is not wrapped at 80 columns: one network per line stays whole.
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
        if result.single is not None:
            print_selection(console, result.single, result.table)
        if result.rows is not None:
            print_sweep(console, result.rows)
    for path in result.written:
        say(f"wrote {path}")


def _served(selection, network: str) -> str:
    return ", ".join(f"{t} {selection.task_losses[t]:.4g}" for t in selection.served_tasks(network))


def print_selection(console, result, table) -> None:
    """The chosen networks, what each serves, the cost and total loss (rich tables on stdout)."""
    from rich.table import Table

    selection, test = result.selection, result.test
    predicted = set(result.predicted or ())
    title = (f"Selection at budget {selection.budget:g}: cost {selection.cost:g}, "
             f"total loss {selection.total_loss:.6g}")
    if test is not None:
        title += f", test loss {test.total_loss:.6g}"
    view = Table(title=title)
    view.add_column("network")
    view.add_column("cost", justify="right")
    view.add_column("serves (task loss)")
    for name in selection.networks:
        label = f"{name} (predicted)" if name in predicted else name
        view.add_row(label, f"{table.candidate(name).cost:g}", _served(selection, name))
    console.print(view)
    tasks = Table(title="Which network serves each task")
    tasks.add_column("task")
    tasks.add_column("network")
    tasks.add_column("loss", justify="right")
    if test is not None:
        tasks.add_column("test network")
        tasks.add_column("test loss", justify="right")
    for task, network in selection.assignment.items():
        cells = [task, network, f"{selection.task_losses[task]:.6g}"]
        if test is not None:
            cells += [test.assignment[task], f"{test.task_losses[task]:.6g}"]
        tasks.add_row(*cells)
    console.print(tasks)
    if not selection.optimal:
        console.print(f"not proven optimal: the search stopped at its time limit; the optimal total loss is "
                      f"between {selection.proven_lower_bound:.6g} (proven lower bound) and "
                      f"{selection.total_loss:.6g} (gap {100 * selection.gap:.3g} %)", soft_wrap=True)
    if predicted & set(selection.networks):
        console.print("(predicted: a network the higher-order approximation predicts; train it to use it)")


def _networks_cell(result) -> str:
    """One line per chosen network: its name and the tasks it serves."""
    selection = result.selection
    predicted = set(result.predicted or ())
    lines = []
    for name in selection.networks:
        mark = " [predicted]" if name in predicted else ""
        lines.append(f"{name}{mark} ({', '.join(selection.served_tasks(name))})")
    return "\n".join(lines)


def print_sweep(console, results) -> None:
    """Per budget: where the choice changes, cost, losses, baselines and the networks (cf. the paper's Tables 6, 7)."""
    from rich.table import Table

    tested = all(r.test is not None for r in results)
    with_random = any(r.random is not None for r in results)
    with_worst = any(r.worst is not None for r in results)
    view = Table(title="Best selection per budget (* where the choice changes)")
    view.add_column("budget", justify="right")
    view.add_column("", justify="center")
    view.add_column("cost", justify="right")
    view.add_column("total loss", justify="right")
    if tested:
        view.add_column("test loss", justify="right")
    if with_random:
        draws = next(r.random.draws for r in results if r.random is not None)
        view.add_column(f"random{' test' if tested else ''} (mean)", justify="right")
    if with_worst:
        view.add_column(f"worst{' test' if tested else ''}", justify="right")
    view.add_column("networks (tasks each serves)", overflow="fold")
    for r in results:
        s = r.selection
        loss = f"{s.total_loss:.6g}" + ("" if s.optimal else f" (gap {100 * s.gap:.3g} %)")
        cells = [f"{s.budget:g}", "*" if r.changed else "", f"{s.cost:g}", loss]
        if tested:
            cells.append(f"{r.test.total_loss:.6g}")
        if with_random:
            value = None
            if r.random is not None:
                value = r.random.test_mean_total_loss if tested else r.random.mean_total_loss
            cells.append(f"{value:.6g}" if value is not None else "-")
        if with_worst:
            w = r.worst
            value = None if w is None else (w.test.total_loss if tested and w.test is not None
                                            else w.selection.total_loss)
            cells.append(f"{value:.6g}" if value is not None else "-")
        cells.append(_networks_cell(r))
        view.add_row(*cells)
    console.print(view)
    if not all(r.selection.optimal for r in results):
        console.print("gap: not proven optimal, the search stopped at its time limit; the optimal total loss is at "
                      "most that much lower", soft_wrap=True)
    if with_random:
        rejected = sum(r.random.rejected for r in results if r.random is not None)
        seed = next(r.random.seed for r in results if r.random is not None)
        short = [f"{r.selection.budget:g}" for r in results if r.random is not None and r.random.draws < draws]
        console.print(f"random: mean total loss of {draws} random selections per budget (seed {seed}; "
                      f"{rejected} draws that left a task uncovered redrawn"
                      + (f"; fewer draws at budget {', '.join(short)}" if short else "") + "); "
                      "worst: the worst selection a random draw can give", soft_wrap=True)


#: Names that moved in 0.3.0 (docs/architecture.md, "Moved modules").
_MOVED = {"parse_tasks": "branchnet.steps.select", "parse_sweep": "branchnet.steps.select",
          "parse_max_loss": "branchnet.steps.select", "groupings": "branchnet.cli.groupings",
          "print_groupings": "branchnet.cli.groupings"}


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)

"""``branchnet select`` and ``branchnet groupings``: budgeted task-grouping selection."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import (BackboneOption, BatchSizeOption, ConfigOption, DeviceOption, EpochsOption,
                               ImageSizeOption, OutOption, QuietOption, RunsOption, SetOption, TaskOption, app,
                               resolve_config)


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
    from branchnet.atomic import atomic_write_json
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
def groupings(
    config: ConfigOption,
    runs: RunsOption = None,
    max_size: Annotated[Optional[int], typer.Option(
        "--max-size", "-k", help="Largest group of tasks to train (default: all tasks, 2^N - 1 groups).")] = None,
    fraction: Annotated[float, typer.Option(
        "--fraction", help="Share of the configured training steps, in (0, 1]; 0.2 = the early-stopping "
                           "approximation (ESA).")] = 1.0,
    widths: Annotated[str, typer.Option(
        "--widths", help="Encoder width factors on model.width, comma-separated, 1 included (e.g. 1,0.5).")] = "1",
    widths_for: Annotated[str, typer.Option(
        "--widths-for", help="Which networks the widths other than 1 apply to: singles (as the paper) or all.")
    ] = "singles",
    predict_higher_order: Annotated[bool, typer.Option(
        "--predict-higher-order", help="Train groups of 1-2 tasks only; predict larger groups from the pairs "
                                       "(the higher-order approximation, HOA).")] = False,
    add_tree: Annotated[Optional[list[Path]], typer.Option(
        "--add-tree", help="A branched network's RUNS/branched/<name>/metrics.json to add as a candidate "
                           "(repeatable).")] = None,
    task: TaskOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue interrupted networks from their last epoch.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain networks that are already trained.")] = False,
    backbone: BackboneOption = None,
    epochs: EpochsOption = None,
    batch_size: BatchSizeOption = None,
    image_size: ImageSizeOption = None,
    device: DeviceOption = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train candidate networks for groups of tasks and write the candidates CSV for `select`.

    One network (a shared encoder, a head per task) per group of up to --max-size tasks,
    plus thinner networks for each other --widths factor. Writes RUNS/groupings/<group>/
    (model.pt, metrics.json), RUNS/groupings/candidates.csv (validation losses; cost = FLOPs
    relative to the mean full-width single-task network) and candidates.json (test metrics
    too). Networks already trained are skipped unless --force.
    """
    from rich.console import Console

    from branchnet.train import distributed
    from branchnet.steps.groupings import parse_widths, run_groupings

    width_values = parse_widths(widths)
    cfg, runs_dir = resolve_config(config, runs, set_, backbone=backbone, epochs=epochs, batch_size=batch_size,
                                   image_size=image_size, device=device)
    distributed.init_from_env(cfg.train.device)
    result = run_groupings(cfg, runs_dir, max_size=max_size, fraction=fraction, widths=width_values,
                           widths_for=widths_for, tasks=task, predict_higher_order=predict_higher_order,
                           add_trees=add_tree or [], resume=resume, force=force, quiet=quiet)
    if distributed.is_main():
        print_groupings(Console(highlight=False), result)


def print_groupings(console, result) -> None:
    """The candidates (cost and validation loss per task), where they were written, what to run next."""
    from rich.table import Table

    from branchnet.selection import minimum_budget

    tasks = result.table.tasks
    view = Table(title=f"Candidates ({len(result.rows)}; cost 1 = {result.reference_flops / 1e6:.4g} MFLOPs "
                       "per image, the mean full-width single-task network; validation loss per task)")
    view.add_column("network")
    view.add_column("status")
    view.add_column("cost", justify="right")
    for task in tasks:
        view.add_column(task, justify="right")
    for row in result.rows:
        losses = result.table.candidate(row["name"]).losses
        view.add_row(row["name"], row["status"], f"{row['cost']:.3f}",
                     *(f"{losses[t]:.4g}" if t in losses else "" for t in tasks))
    console.print(view)
    low = minimum_budget(result.table)
    start = math.ceil(low * 2 - 1e-9) / 2  # the sweep's budgets must all be feasible
    stop = max(start, float(len(tasks)))  # every task on its own network
    # soft_wrap: paths and the command stay whole, to be copied
    console.print(f"wrote {result.csv_path} and {result.json_path} (test metrics)", soft_wrap=True)
    console.print(f"next: branchnet select --candidates {result.csv_path} --budget B "
                  f"(at least {low:.4g}), or --sweep {start:g}:{stop:g}:0.5", soft_wrap=True)

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

    from branchnet.errors import BadInput
    from branchnet.atomic import atomic_write_json
    from branchnet.progress import say
    from branchnet.selection import select_networks, select_sweep
    from branchnet.selection.branch_bound import check_time_limit
    from branchnet.selection.live import search_display
    from branchnet.selection.report import budget_results
    from branchnet.selection.tables import match_tables, read_table
    from branchnet.units import parse_budget

    if budget is None and sweep is None:
        raise BadInput("give --budget B (e.g. --budget 2.5) or --sweep START:STOP:STEP (e.g. --sweep 1:5:0.5)")
    if draws < 1:
        raise BadInput(f"--random {draws}: draw at least 1 random selection per budget (or pass --no-baselines)")
    if seed < 0:
        raise BadInput(f"--seed {seed}: give a seed >= 0")
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
    limits = parse_max_loss(max_loss or [], table.tasks)

    with search_display(not (quiet or json_out), seconds) as progress:
        selection = (select_networks(table, budget_value, limits, time_limit=seconds, progress=progress)
                     if budget_value is not None else None)
        swept = select_sweep(table, budgets, limits, time_limit=seconds, progress=progress) \
            if budgets is not None else None
    single = budget_results(table, [selection], test_table, predicted)[0] if selection is not None else None
    rows = (budget_results(table, swept, test_table, predicted, sweep=True, baselines=baselines, draws=draws,
                           seed=seed) if swept is not None else None)
    result = single.to_json() if single is not None else [r.to_json() for r in rows]

    # Everything is known to be valid: now write.
    if out is not None:
        atomic_write_json(out, result)
    plot_path = None
    if rows is not None:
        from branchnet.selection.plot import plot_results
        plot_path = plot if plot is not None else candidates.with_name(f"{candidates.stem}-sweep.png")
        plot_results(rows, plot_path)

    for note in notes:
        say(note)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        import sys

        from rich.console import Console

        # Piped output is not wrapped at 80 columns: one network per line stays whole.
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
        if single is not None:
            print_selection(console, single, table)
        if rows is not None:
            print_sweep(console, rows)
    if out is not None:
        say(f"wrote {out}")
    if plot_path is not None:
        say(f"wrote {plot_path}")


def parse_tasks(text: str) -> list[str]:
    """``"seg,depth"`` -> ``["seg", "depth"]`` (names checked by the table reader)."""
    from branchnet.errors import BadInput

    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise BadInput("--tasks is empty; give the task columns' names, e.g. --tasks seg,depth,normals")
    return names


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

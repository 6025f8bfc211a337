"""``branchnet groupings``: train the candidate networks of task groups for ``select`` (the step is
:func:`branchnet.steps.groupings.run_groupings`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import (BackboneOption, BatchSizeOption, ConfigOption, DeviceOption, EpochsOption,
                               ImageSizeOption, QuietOption, RunsOption, SetOption, TaskOption, app,
                               resolve_config)


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

    from branchnet import distributed
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

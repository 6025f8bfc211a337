"""``branchnet search``: learn what sharing costs each task from trees it trains, in a loop."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from branchnet.cli.app import (BudgetsOption, ConfigOption, CurvesOption, DeviceOption, JobsOption, PerDeviceOption,
                               QuietOption, RunsOption, SetOption, SweepOption, app, resolve_config)


@app.command("search")
def search(
    config: ConfigOption,
    runs: RunsOption = None,
    budgets: BudgetsOption = None,
    sweep: SweepOption = None,
    networks: Annotated[Optional[int], typer.Option(
        "--networks", help="Networks the search trains in all budgets together, those already trained "
                           "included (default: 4 per task).")] = None,
    seeds: Annotated[int, typer.Option(
        "--seeds", help="The search's own training seeds: 100..100+S-1, never a seed evaluate judges on.")] = 2,
    measures: Annotated[Optional[str], typer.Option(
        "--measures", help="Affinity measures of the prior: rsa, fafs, tag or NAME=PATH, comma-separated "
                           "(default: every affinity file the run has).")] = None,
    acquisition: Annotated[str, typer.Option(
        "--acquisition", help="How the next tree is chosen: thompson (posterior draws through the exact "
                              "search), ei (expected improvement over the window's trees) or random.")] = "thompson",
    batch: Annotated[Optional[int], typer.Option(
        "--batch", help="Proposals per round, trained side by side (default: torchrun ranks x --jobs).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted network from its last "
                                                          "epoch.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start the search over: remove RUNS/search and train "
                                                        "every network again.")] = False,
    jobs: JobsOption = "1",
    per_device: PerDeviceOption = None,
    curves: CurvesOption = False,
    device: DeviceOption = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Fit a model of what sharing each stage with each task costs every task, from trees the search
    trains with its own seeds, proposing each next tree where the model expects to learn most;
    recommend the best tree of every budget (RUNS/search/tree-<budget>.json, model.json, summary.md).

    Needs the run's single-task models and at least one affinity file for the prior (`branchnet
    train-single`, `branchnet affinity`). `branchnet build --cost learned --model RUNS/search/model.json`
    searches any budget with the model; `branchnet evaluate --measures rsa,learned=RUNS/search` judges
    its trees on seeds the search never saw.
    """
    from branchnet.steps.search import search as run_search
    from branchnet import distributed

    cfg, runs_dir = resolve_config(config, runs, set_, device=device)
    distributed.init_from_env(cfg.train.device)
    run_search(cfg, runs_dir, budgets=budgets, sweep=sweep, networks=networks, seeds=seeds, measures=measures,
               acquisition=acquisition, batch=batch, resume=resume, force=force, quiet=quiet, jobs=jobs,
               per_device=per_device, curves=curves)

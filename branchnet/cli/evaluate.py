"""``branchnet evaluate``: the tree of each affinity measure against random trees of its size."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from branchnet.cli.app import (BudgetsOption, ConfigOption, CurvesOption, DeviceOption, JobsOption, PerDeviceOption,
                               QuietOption, RunsOption, SetOption, SweepOption, app, resolve_config)


@app.command("evaluate")
def evaluate(
    config: ConfigOption,
    runs: RunsOption = None,
    budgets: BudgetsOption = None,
    sweep: SweepOption = None,
    random: Annotated[Optional[int], typer.Option(
        "--random", help="Random trees per budget, uniform over the trees of its window [0.9 B, B] (default 8; "
                         "all of them when the window holds fewer).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Train every tree with seeds 0..S-1 (seed s: the config's "
                                                       "seed + s).")] = 3,
    measures: Annotated[str, typer.Option(
        "--measures", help="Affinity measures whose trees are evaluated: rsa, fafs, tag, or NAME=PATH of any "
                           "affinity file; comma-separated.")] = "rsa,fafs",
    exhaustive: Annotated[bool, typer.Option(
        "--exhaustive", help="Train every tree (instead of --random) and compare with all of a window's.")] = False,
    branch_stages: Annotated[Optional[int], typer.Option(
        "--branch-stages", help="With --exhaustive: only trees that branch in the last L stages (the paper's "
                                "Fig. 5: 3).")] = None,
    costs: Annotated[str, typer.Option(
        "--costs", help="Group costs of the dissimilarity: max (the paper's), mean, weighted, sensitivity; "
                        "comma-separated. Each scores every tree and adds its tree of each budget.")] = "max",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted network from its last "
                                                          "epoch.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start the evaluation over: remove RUNS/evaluate and "
                                                        "train every network again.")] = False,
    jobs: JobsOption = "1",
    per_device: PerDeviceOption = None,
    curves: CurvesOption = False,
    device: DeviceOption = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train the tree of each measure, random trees of the same size, all-shared and all-separate with
    several seeds; report whether the affinity's tree beats random trees (RUNS/evaluate/summary.md).

    Needs the run's single-task models and affinity files (`branchnet train-single`, `branchnet
    affinity`, `--measure fafs`). Every network is kept in RUNS/evaluate/nets/<tree>/seed<s>/, so a
    rerun with more seeds, budgets or random trees trains only what is missing. `--jobs N` trains
    N networks at once on this machine; under torchrun the ranks share the networks (each rank its
    --jobs at a time, on its own device).
    """
    from branchnet.steps.evaluate import evaluate as run_evaluate
    from branchnet import distributed

    cfg, runs_dir = resolve_config(config, runs, set_, device=device)
    distributed.init_from_env(cfg.train.device)
    run_evaluate(cfg, runs_dir, budgets=budgets, sweep=sweep, random=random, seeds=seeds, measures=measures,
                 exhaustive=exhaustive, branch_stages=branch_stages, costs=costs, resume=resume, force=force,
                 quiet=quiet, jobs=jobs, per_device=per_device, curves=curves)

"""``branchnet train``: train a branched network from a tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import (BackboneOption, BatchSizeOption, ConfigOption, DeviceOption, EpochsOption,
                               ImageSizeOption, QuietOption, RunsOption, SetOption, app, resolve_config)


@app.command("train")
def train(
    config: ConfigOption,
    tree: Annotated[str, typer.Option("--tree", help="RUNS/tree.json, or 'shared' / 'separate' for the two ends.")],
    runs: RunsOption = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name (default: tree file stem, shared or separate).")] = None,
    weighting: Annotated[Optional[str], typer.Option(
        "--weighting", help="Loss weighting: uniform (default, as in the paper), uncertainty, dwa, gradnorm.")] = None,
    init: Annotated[Optional[str], typer.Option(
        "--init", help="Node initialisation: first (single-task weights of the group's first task), average, random.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain the network even if it was trained (with these "
                                                        "or other settings).")] = False,
    baselines: Annotated[Optional[Path], typer.Option(
        "--baselines", help="Compute Δ_MTL against the single-task models of this run directory, whatever "
                            "their settings (recorded in metrics.json); default: this run's own, which must "
                            "have been trained with the same settings.")] = None,
    allow_plain: Annotated[bool, typer.Option(
        "--allow-plain", help="With train.roaming: train a tree that shares no encoder node between two or more "
                              "tasks plainly (Maximum Roaming has nothing to roam over) instead of stopping.")] = False,
    backbone: BackboneOption = None,
    epochs: EpochsOption = None,
    batch_size: BatchSizeOption = None,
    image_size: ImageSizeOption = None,
    device: DeviceOption = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train the branched network of a tree; report per-task metrics and the multi-task delta.

    Writes RUNS/branched/<name>/ (model.pt, metrics.json, history.csv, curves.png, run.json).
    A network already trained with the same settings is kept; one trained with other
    settings stops with exit 2 unless --force. Runs under torchrun for several GPUs (or CPU
    processes with gloo).
    """
    from branchnet import distributed
    from branchnet.steps.train_branched import train_branched

    sets = list(set_ or [])
    if weighting:
        sets.append(f"train.weighting={weighting}")
    if init:
        sets.append(f"branched.init={init}")
    cfg, runs_dir = resolve_config(config, runs, sets, backbone=backbone, epochs=epochs, batch_size=batch_size,
                                   image_size=image_size, device=device)
    distributed.init_from_env(cfg.train.device)
    train_branched(cfg, runs_dir, tree, name=name, resume=resume, force=force, quiet=quiet, baselines=baselines,
                   allow_plain=allow_plain)

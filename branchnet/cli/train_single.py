"""``branchnet train-single``: one encoder + head per task."""

from __future__ import annotations

from branchnet.cli.app import (BackboneOption, BatchSizeOption, ConfigOption, DeviceOption, EpochsOption,
                               ImageSizeOption, QuietOption, RunsOption, SetOption, TaskOption, app,
                               resolve_config)
import typer
from typing import Annotated


@app.command("train-single")
def train_single(
    config: ConfigOption,
    runs: RunsOption = None,
    task: TaskOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue interrupted models from their last epoch.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain models that are already trained.")] = False,
    backbone: BackboneOption = None,
    epochs: EpochsOption = None,
    batch_size: BatchSizeOption = None,
    image_size: ImageSizeOption = None,
    device: DeviceOption = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train one single-task model (encoder + head) per task of the config.

    Writes RUNS/single/<task>/model.pt and metrics.json; models already trained are
    skipped unless --force.
    """
    from branchnet import distributed
    from branchnet.steps.train_single import train_single as run

    cfg, runs_dir = resolve_config(config, runs, set_, backbone=backbone, epochs=epochs, batch_size=batch_size,
                                   image_size=image_size, device=device)
    distributed.init_from_env(cfg.train.device)
    run(cfg, runs_dir, task, resume=resume, force=force, quiet=quiet)

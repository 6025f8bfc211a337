"""``branchnet run``: the whole pipeline, end to end."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from branchnet.cli.app import (BackboneOption, BatchSizeOption, ConfigOption, DeviceOption, EpochsOption,
                               ImageSizeOption, QuietOption, RunsOption, SetOption, app, resolve_config)


@app.command("run")
def run(
    config: ConfigOption,
    runs: RunsOption = None,
    params: Annotated[Optional[str], typer.Option(
        "--params", help="Parameter budget of the branched network, e.g. 1.5M (default: config's "
                         "branched.params, else halfway between all-shared and all-separate).")] = None,
    flops: Annotated[Optional[str], typer.Option("--flops", help="Optional FLOPs budget per image, e.g. 0.2G.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain every model, even those already trained "
                                                        "(with these or other settings).")] = False,
    backbone: BackboneOption = None,
    epochs: EpochsOption = None,
    batch_size: BatchSizeOption = None,
    image_size: ImageSizeOption = None,
    device: DeviceOption = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run the whole pipeline: train-single, affinity, build, train (tree, shared, separate), report.

    Writes everything under RUNS (default runs/<config name>) and RUNS/report.md; an
    interrupted run continues where it stopped when started again.
    """
    from branchnet.steps.run import run_pipeline
    from branchnet import distributed

    cfg, runs_dir = resolve_config(config, runs, set_, backbone=backbone, epochs=epochs, batch_size=batch_size,
                                   image_size=image_size, device=device)
    distributed.init_from_env(cfg.train.device)
    run_pipeline(cfg, runs_dir, params, flops, force=force, quiet=quiet)

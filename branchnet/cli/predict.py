"""``branchnet predict``: a figure of a trained network's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from branchnet.cli.app import OutOption, QuietOption, SetOption, app


@app.command("predict")
def predict(
    model: Annotated[Path, typer.Option("--model", "-m", help="A model.pt: RUNS/single/<task>/, "
                                        "RUNS/branched/<name>/ or RUNS/groupings/<group>/.")],
    split: Annotated[str, typer.Option("--split", help="Split of the model's config: train, val, test, affinity.")]
    = "val",
    images: Annotated[int, typer.Option("--images", help="How many images (rows).")] = 8,
    out: OutOption = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Draw a row per image: the input, then each task's target and prediction.

    Writes --out (default: predictions_<split>.png beside the model file); --set changes
    the stored config (e.g. --set data.root=/new/place).
    """
    from branchnet.steps.predict import predict as run

    path = run(model, split, images, out, device, set_)
    if not quiet:
        typer.echo(str(path))

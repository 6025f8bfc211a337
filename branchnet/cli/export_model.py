"""``branchnet export-model``: ship a trained network as TorchScript, ONNX or an ExportedProgram (the step
is :func:`branchnet.steps.export_model.export_model`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import OutOption, QuietOption, app


@app.command("export-model")
def export_model(
    model: Annotated[Path, typer.Argument(help="A model.pt (RUNS/branched/<name>/, RUNS/single/<task>/ or RUNS/groupings/<group>/).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="torchscript | onnx | exported-program")],
    out: OutOption = None,
    input_size: Annotated[Optional[tuple[int, int]], typer.Option("--input-size", help="H W of the export and its check (default: the model's training size).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Write a standalone inference artefact with one named output per task.

    TorchScript and ExportedProgram return a dict task -> tensor, ONNX names its outputs
    after the tasks (input `image`, dynamic batch). The artefact is reloaded and compared
    with the eager network on random inputs before it is kept; the tolerance is printed.
    Default path: model.torchscript.pt, model.onnx or model.pt2 beside the model.
    """
    from branchnet.steps.export_model import export_model as run

    result = run(model, fmt, out, input_size)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
    elif not quiet:
        opset = f", opset {result.opset}" if result.opset is not None else ""
        convs = ""
        if result.convolutions:
            convs = (f"; {result.convolutions[0]} convolutions in its graph for the network's "
                     f"{result.convolutions[1]} Conv2d modules (each encoder node runs once)")
        typer.echo(f"wrote {result.path} ({result.format}, exporter: {result.exporter}{opset}); input "
                   f"'image' (B, 3, {result.input_size[0]}, {result.input_size[1]}), outputs "
                   f"{', '.join(result.tasks)}{convs}")
        typer.echo(result.check.line())
        for note in result.notes:
            typer.echo(f"note: {note}")

"""``branchnet profile``: latency per node, per head and end to end (the step is
:func:`branchnet.steps.profile.profile`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import OutOption, QuietOption, app


@app.command("profile")
def profile(
    source: Annotated[Path, typer.Argument(help="A model.pt (trained weights) or a tree.json (random weights; needs --config).")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Config whose task heads build a tree.json's network.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated, e.g. 1,8.")] = "1",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed rounds per part (after the warm-up).")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed rounds first.")] = 3,
    input_size: Annotated[Optional[tuple[int, int]], typer.Option("--input-size", help="H W of the images (default: the model's or config's size).")] = None,
    out: OutOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on stdout instead of tables.")] = False,
    no_write: Annotated[bool, typer.Option("--no-write", help="Do not write <stem>.profile-<device>.json/.png.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Latency per encoder node, per head and end to end, and memory peak, beside the
    all-shared and all-separate networks of the same config, measured in the same run.

    Median and interquartile spread after warm-up (torch.cuda.synchronize around each
    call on CUDA). Writes <stem>.profile-<device>.json and .png beside SOURCE (or --out).
    """
    from branchnet.config import load_config
    from branchnet.steps.profile import profile as run

    cfg = load_config(config) if config is not None else None
    report = run(source, cfg, device, batch, repeats, warmup, input_size, out, write=not no_write)
    if json_out:
        typer.echo(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        report.print()
    if not quiet:
        from branchnet.progress import say

        for path in report.written:
            say(f"wrote {path}")

"""``branchnet export``: a tree.json as a graph (the step is :func:`branchnet.steps.export.export_graph`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from branchnet.cli.app import OutOption, QuietOption, app


@app.command("export")
def export(
    tree: Annotated[Path, typer.Argument(help="A tree.json from `branchnet build`.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json | graphml | gml | dot | mermaid | png | svg")],
    out: OutOption = None,
    quiet: QuietOption = False,
) -> None:
    """Export a tree.json as a graph: nodes (stage, group) with tasks/params/FLOPs, heads as leaves."""
    from branchnet.steps.export import export_graph

    path = export_graph(tree, fmt, out)
    if not quiet:
        from branchnet.progress import say

        say(f"wrote {path}")

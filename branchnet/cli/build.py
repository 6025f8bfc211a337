"""``branchnet build`` and ``branchnet export``: tree search under a budget, graph exports."""

from branchnet.cli.app import app


@app.command("build")
def build() -> None:
    """Search the branched tree of least dissimilarity under a budget (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("build is not implemented yet")


@app.command("export")
def export() -> None:
    """Export a tree.json as a graph (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("export is not implemented yet")

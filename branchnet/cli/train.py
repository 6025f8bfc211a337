"""``branchnet train``: train a branched network from a tree."""

from branchnet.cli.app import app


@app.command("train")
def train() -> None:
    """Train the branched network of a tree.json (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("train is not implemented yet")

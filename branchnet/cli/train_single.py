"""``branchnet train-single``: one encoder + head per task."""

from branchnet.cli.app import app


@app.command("train-single")
def train_single() -> None:
    """Train one single-task model per task (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("train-single is not implemented yet")

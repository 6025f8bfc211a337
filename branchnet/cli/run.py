"""``branchnet run``: the whole pipeline, end to end."""

from branchnet.cli.app import app


@app.command("run")
def run() -> None:
    """Run the whole pipeline end to end (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("run is not implemented yet")

"""``branchnet select`` and ``branchnet groupings``: budgeted task-grouping selection."""

from branchnet.cli.app import app


@app.command("select")
def select() -> None:
    """Choose the best set of networks under an inference budget (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("select is not implemented yet")


@app.command("groupings")
def groupings() -> None:
    """Train candidate networks for groups of tasks (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("groupings is not implemented yet")

"""``branchnet affinity``: RSA task affinity at every branch point."""

from branchnet.cli.app import app


@app.command("affinity")
def affinity() -> None:
    """Measure task affinity (RSA) at every branch point (not implemented yet)."""
    from branchnet.errors import BadInput
    raise BadInput("affinity is not implemented yet")

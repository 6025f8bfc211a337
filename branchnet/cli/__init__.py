"""Command line: ``branchnet <step> ...``, one thin module per pipeline step."""

from branchnet.cli.app import app, main
from branchnet.cli import (  # noqa: F401  (each module registers its commands)
    train_single, affinity, build, train, run, select, predict, evaluate, search, deploy,
)

__all__ = ["app", "main"]

"""Command line: ``branchnet <step> ...``, one thin module per command (the order below is the
order of ``branchnet --help``)."""

from branchnet.cli.app import app, main
from branchnet.cli import (  # noqa: F401  (each module registers its command)
    train_single, affinity, build, export, train, run, select, groupings, predict, evaluate, search, export_model,
    profile,
)

__all__ = ["app", "main"]

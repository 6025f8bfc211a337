"""Progress bars for long work (rich), quiet when asked or when not on a terminal."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

_console: Console | None = None


def console() -> Console:
    """The console that progress bars and status lines go to (stderr, so stdout stays clean)."""
    global _console
    if _console is None:
        _console = Console(stderr=True)
    return _console


def progress_bar(quiet: bool = False) -> Progress:
    """A rich progress bar on stderr; disabled with ``quiet`` or ``BRANCHNET_QUIET=1``.

    Use as a context manager; ``add_task(description, total=n)`` per loop and put
    running figures (loss, metric) into the description with ``update``.
    """
    disable = quiet or os.environ.get("BRANCHNET_QUIET") == "1"
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console(),
        disable=disable,
        transient=not sys.stderr.isatty(),
    )


def say(message: str) -> None:
    """One status line on stderr (unless ``BRANCHNET_QUIET=1``)."""
    if os.environ.get("BRANCHNET_QUIET") != "1":
        console().print(message, highlight=False)

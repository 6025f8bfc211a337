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


_quiet_asked = False


def set_quiet(quiet: bool) -> None:
    """Silence status lines and progress bars for the rest of the command (``--quiet``)."""
    global _quiet_asked
    _quiet_asked = bool(quiet)


def _quiet_process() -> bool:
    """Quiet when asked (``--quiet``, ``BRANCHNET_QUIET=1``) and on every torchrun rank but 0."""
    return _quiet_asked or os.environ.get("BRANCHNET_QUIET") == "1" or os.environ.get("RANK", "0") != "0"


def progress_bar(quiet: bool = False) -> Progress:
    """A rich progress bar on stderr; disabled with ``quiet``, ``BRANCHNET_QUIET=1``, or on
    torchrun ranks other than 0.

    Use as a context manager; ``add_task(description, total=n)`` per loop and put
    running figures (loss, metric) into the description with ``update``.
    """
    disable = quiet or _quiet_process()
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
    """One status line on stderr (not with ``--quiet`` or ``BRANCHNET_QUIET=1``, nor on ranks but 0)."""
    if not _quiet_process():
        console().print(message, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """``branchnet: warning: <message>`` on stderr, even with ``--quiet`` (a result the user should
    know is weak, e.g. an affinity measured on too few steps); on torchrun, rank 0 only."""
    if os.environ.get("RANK", "0").strip() in ("", "0"):
        print(f"branchnet: warning: {' '.join(message.split())}", file=sys.stderr)

"""Progress bars for long work (rich), quiet when asked or when not on a terminal.

A worker process of a pool (:mod:`branchnet.steps.jobs`) forwards its status lines and
progress bars to the parent (:func:`forward_to`), which shows every running job in one view
(:class:`JobsView`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

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


#: Where a worker process sends its status lines and progress (None: to the console).
_forward: Callable[[dict[str, Any]], None] | None = None
#: Seconds between two progress messages of a forwarded bar.
FORWARD_SECONDS = 0.5


def forward_to(send: Callable[[dict[str, Any]], None] | None) -> None:
    """In a worker process: send status lines (``{"say": text}``) and progress
    (``{"bar": id, "description", "completed", "total"}``) to ``send`` instead of the console."""
    global _forward
    _forward = send


class ForwardedProgress:
    """The :func:`progress_bar` of a worker process: what a rich ``Progress`` is told, sent on
    (at most every :data:`FORWARD_SECONDS` per bar, and always when a bar starts or ends)."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send
        self.bars: dict[int, dict[str, Any]] = {}
        self.sent: dict[int, float] = {}

    def __enter__(self) -> "ForwardedProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in list(self.bars):
            self._send(bar, force=True, done=True)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **_: Any) -> int:
        bar = len(self.bars)
        self.bars[bar] = {"description": description, "total": total, "completed": completed}
        self._send(bar, force=True)
        return bar

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None,
               description: str | None = None, total: float | None = None, **_: Any) -> None:
        state = self.bars[task_id]
        if completed is not None:
            state["completed"] = completed
        if advance:
            state["completed"] += advance
        if description is not None:
            state["description"] = description
        if total is not None:
            state["total"] = total
        self._send(task_id)

    def _send(self, bar: int, force: bool = False, done: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.sent.get(bar, 0.0) >= FORWARD_SECONDS:
            self.sent[bar] = now
            self.send({"bar": bar, **self.bars[bar], "done": done})


def progress_bar(quiet: bool = False) -> Progress:
    """A rich progress bar on stderr; disabled with ``quiet``, ``BRANCHNET_QUIET=1``, or on
    torchrun ranks other than 0.

    Use as a context manager; ``add_task(description, total=n)`` per loop and put
    running figures (loss, metric) into the description with ``update``.
    """
    disable = quiet or _quiet_process()
    if _forward is not None and not disable:
        return ForwardedProgress(_forward)  # type: ignore[return-value]
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
    if _quiet_process():
        return
    if _forward is not None:
        _forward({"say": message})
    else:
        console().print(message, highlight=False, soft_wrap=True)


class JobsView:
    """The view of a pool of jobs on stderr: one row for the whole (networks done of how many,
    the time left) and one per running job (what it trains, its steps, its elapsed time).
    Disabled with ``quiet`` (and wherever :func:`progress_bar` is)."""

    def __init__(self, title: str, total: int, quiet: bool = False) -> None:
        self.progress = progress_bar(quiet)
        if isinstance(self.progress, ForwardedProgress):  # a pool inside a worker: show nothing
            self.progress = progress_bar(True)
        self.overall = self.progress.add_task(title, total=total)
        self.title = title
        self.rows: dict[int, Any] = {}

    def __enter__(self) -> "JobsView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def started(self, slot: int, label: str) -> None:
        """Job ``slot`` began ``label``."""
        self.finished(slot)
        self.rows[slot] = self.progress.add_task(f"  job {slot + 1}: {label}", total=None)

    def step(self, slot: int, description: str, completed: float, total: float | None) -> None:
        """Job ``slot``'s current bar (a training's steps, an evaluation's batches)."""
        if slot in self.rows:
            self.progress.update(self.rows[slot], description=f"  job {slot + 1}: {description}",
                                 completed=completed, total=total)

    def finished(self, slot: int) -> None:
        """Job ``slot`` is done with its network (the row goes)."""
        row = self.rows.pop(slot, None)
        if row is not None:
            self.progress.remove_task(row)

    def overall_done(self, done: int, left: str) -> None:
        """``done`` networks of the whole are finished; ``left`` says the time left."""
        self.progress.update(self.overall, completed=done, description=f"{self.title}: {left}")


def warn(message: str) -> None:
    """``branchnet: warning: <message>`` on stderr, even with ``--quiet`` (a result the user should
    know is weak, e.g. an affinity measured on too few steps); on torchrun, rank 0 only."""
    if os.environ.get("RANK", "0").strip() in ("", "0"):
        print(f"branchnet: warning: {' '.join(message.split())}", file=sys.stderr)

"""What ``branchnet select`` shows on stderr while it searches: incumbent, lower bound, gap.

On a terminal one line is redrawn in place (and removed at the end); otherwise (a log
file, a pipe) a status line is written every :data:`LOG_EVERY` seconds once a search has
taken that long. Nothing is shown with ``--quiet`` or ``--json``, or where
:func:`branchnet.progress.progress_bar` would be silent (``BRANCHNET_QUIET=1``, a
torchrun rank other than 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from branchnet.selection.partition_search import SearchStatus

#: Seconds between status lines when stderr is not a terminal (and before the first).
LOG_EVERY = 10.0


def describe(status: SearchStatus, time_limit: float | None = None) -> str:
    """One line: the budget, the incumbent, the proven lower bound, the gap, nodes and seconds."""
    where = f"budget {status.budget:g}: " if status.budget is not None else ""
    if status.incumbent is None:
        best = "no selection yet"
    else:
        best = (f"best total loss {status.incumbent:.6g}, lower bound {status.lower_bound:.6g}, "
                f"gap {100 * status.gap:.3g} %")
    limit = f" of {time_limit:g} s" if time_limit is not None else ""
    return f"searching {where}{best} ({status.nodes:,} nodes, {status.elapsed:.1f} s{limit})"


@contextlib.contextmanager
def search_display(enabled: bool, time_limit: float | None = None) -> Iterator[Callable[[SearchStatus], None] | None]:
    """A progress callback for :func:`~branchnet.selection.select_sweep` (None when nothing is shown).

    Args:
        enabled: False with ``--quiet`` or ``--json``.
        time_limit: the search's time limit per budget, shown beside the seconds.
    """
    from branchnet.progress import console, progress_bar, say

    if not enabled or progress_bar(quiet=False).disable:
        yield None
        return
    out = console()
    if not out.is_terminal:
        logged = {"next": LOG_EVERY}

        def log(status: SearchStatus) -> None:
            if status.done:
                logged["next"] = LOG_EVERY
            elif status.elapsed >= logged["next"]:
                logged["next"] = status.elapsed + LOG_EVERY
                say(describe(status, time_limit))

        yield log
        return

    from rich.live import Live
    from rich.text import Text

    with Live(Text(""), console=out, transient=True, refresh_per_second=4) as live:
        def show(status: SearchStatus) -> None:
            live.update(Text("" if status.done else describe(status, time_limit)))

        yield show

"""What ``branchnet select`` reports per budget: the selection, its test score, the baselines.

:func:`budget_results` gathers, for each selection (one budget each), the chosen
networks scored on a second table (the paper's test losses, Sec. 4.2), which chosen
networks are predicted (HOA, Sec. 3.3.2), and for a sweep whether the optimum changed
from the budget before (the points of the loss/cost trade-off, Fig. 3) and the random
and worst baselines (Sec. 4.3, :mod:`~branchnet.selection.baselines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from branchnet.selection.baselines import (DEFAULT_DRAWS, RandomBaseline, WorstSelection, random_baseline,
                                           worst_baseline)
from branchnet.selection.candidates import CandidateTable
from branchnet.selection.solution import Selection
from branchnet.selection.tables import rescore


@dataclass(frozen=True)
class BudgetResult:
    """One budget's result.

    Attributes:
        selection: the optimal selection (on the selection table).
        test: the same networks scored on the test table (None without one).
        predicted: the chosen networks that are predicted, not measured (None without HOA).
        changed: whether the chosen networks differ from the budget before's (None
            outside a sweep; the first budget of a sweep counts as a change).
        random: the random-selection baseline (None when not computed).
        worst: the worst selection (None when not computed).
    """

    selection: Selection
    test: Selection | None = None
    predicted: tuple[str, ...] | None = None
    changed: bool | None = None
    random: RandomBaseline | None = None
    worst: WorstSelection | None = None

    def to_json(self) -> dict[str, Any]:
        """The docs/design.md object, plus ``test_total_loss`` and ``test_assignment`` with a test
        table, ``predicted`` with HOA, and ``changed``, ``random``, ``worst`` in a sweep."""
        out = self.selection.to_json()
        if self.test is not None:
            out["test_total_loss"] = float(self.test.total_loss)
            out["test_assignment"] = dict(self.test.assignment)
        if self.predicted is not None:
            out["predicted"] = list(self.predicted)
        if self.changed is not None:
            out["changed"] = self.changed
        if self.random is not None:
            out["random"] = self.random.to_json()
        if self.worst is not None:
            out["worst"] = self.worst.to_json()
        return out


def budget_results(table: CandidateTable, selections: Sequence[Selection], test: CandidateTable | None = None,
                   predicted: Sequence[str] | None = None, sweep: bool = False, baselines: bool = False,
                   draws: int = DEFAULT_DRAWS, seed: int = 0) -> list[BudgetResult]:
    """:class:`BudgetResult` for each selection.

    Args:
        table: the candidates the selections were made from.
        selections: one per budget, in sweep order.
        test: a table of the same networks to score them on (checked beforehand with
            :func:`~branchnet.selection.tables.match_tables`).
        predicted: the names of the predicted networks of ``table`` (HOA), if any.
        sweep: mark where the chosen networks change from one budget to the next.
        baselines: compute the random (``draws`` draws from ``seed``, the same seed at
            every budget) and worst baselines at each budget.
    """
    out = []
    before: tuple[str, ...] | None = None
    guessed = set(predicted) if predicted is not None else None
    for selection in selections:
        changed = (selection.networks != before) if sweep else None
        before = selection.networks
        out.append(BudgetResult(
            selection=selection,
            test=rescore(selection, test) if test is not None else None,
            predicted=tuple(n for n in selection.networks if n in guessed) if guessed is not None else None,
            changed=changed,
            random=random_baseline(table, selection.budget, draws, seed, test) if baselines else None,
            worst=worst_baseline(table, selection.budget, test) if baselines else None,
        ))
    return out

"""A solution of the selection problem, how it is scored, and how ties are broken.

Standley et al., Sec. 3: a solution ``S`` is a set of networks that together solve every
task; ``cost(S) = sum_{n in S} c_n``; each task is served by the chosen network with its
lowest loss, ``L(S, t) = min_{n in S} L(n, t)``; ``L(S) = sum_t L(S, t)``.

Ties (docs/design.md, "Selection"): least total loss, then lower cost, then fewer networks,
then the set whose sorted row numbers in the candidate table come first
(lexicographically). Sums are taken with :func:`math.fsum` (exactly rounded, so the
same served losses always give the same total whatever the order), which makes equal
totals compare equal and the tie-breaks well defined.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from branchnet.errors import BadInput
from branchnet.selection.candidates import CandidateTable

#: Relative slack on the budget: ``cost(S) <= budget * (1 + BUDGET_RTOL)``, so that
#: costs such as 0.1 + 0.2 fit a budget of 0.3 despite binary rounding.
BUDGET_RTOL = 1e-9


def fits(cost: float, budget: float) -> bool:
    """Whether a total ``cost`` fits ``budget`` (with :data:`BUDGET_RTOL` slack)."""
    return cost <= budget + BUDGET_RTOL * max(1.0, abs(budget))


@dataclass(frozen=True)
class Selection:
    """The networks chosen under a budget.

    Attributes:
        budget: the budget it was chosen under (relative cost).
        cost: the chosen networks' total cost.
        total_loss: the sum over tasks of each task's served loss.
        networks: the chosen networks' names, in candidate-table order.
        assignment: ``{task: network}``, which chosen network serves each task (task order).
        task_losses: ``{task: loss}``, the served loss of each task.
        optimal: whether the search proved it optimal (False: it stopped on a time or
            node limit, and ``lower_bound`` is what it proved).
        lower_bound: no selection within the budget has a total loss below this (None:
            ``total_loss``, the selection being optimal).
    """

    budget: float
    cost: float
    total_loss: float
    networks: tuple[str, ...]
    assignment: dict[str, str]
    task_losses: dict[str, float] = field(default_factory=dict)
    optimal: bool = True
    lower_bound: float | None = None

    @property
    def proven_lower_bound(self) -> float:
        """The proven lower bound on the optimal total loss (``total_loss`` when optimal)."""
        return float(self.total_loss if self.lower_bound is None else min(self.lower_bound, self.total_loss))

    @property
    def gap(self) -> float:
        """The proven relative gap ``(total_loss - lower bound) / total_loss`` (0 when optimal).

        The optimum lies between the lower bound and ``total_loss``; with a total loss
        of 0 the gap is the absolute difference (also 0).
        """
        return relative_gap(self.total_loss, self.proven_lower_bound)

    def to_json(self) -> dict[str, Any]:
        """The docs/design.md ``--json`` object: budget, cost, total_loss, networks, assignment,
        and whether it is proven ``optimal``, with the proven ``lower_bound`` and relative ``gap``."""
        return {"budget": float(self.budget), "cost": float(self.cost), "total_loss": float(self.total_loss),
                "networks": list(self.networks), "assignment": dict(self.assignment),
                "optimal": bool(self.optimal), "lower_bound": self.proven_lower_bound, "gap": float(self.gap)}

    def served_tasks(self, network: str) -> list[str]:
        """The tasks that ``network`` serves in this selection, in task order."""
        return [t for t, n in self.assignment.items() if n == network]


def relative_gap(incumbent: float, lower_bound: float) -> float:
    """``(incumbent - lower_bound) / |incumbent|``, >= 0 (the difference itself when the incumbent is 0)."""
    diff = max(0.0, float(incumbent) - float(lower_bound))
    return diff / abs(incumbent) if incumbent != 0 else diff


def total(values: Iterable[float]) -> float:
    """Exactly rounded sum (order-independent), used for every loss and cost total."""
    return math.fsum(values)


def solution_key(loss: float, cost: float, rows: Sequence[int]) -> tuple:
    """The order solutions are ranked in: smaller is better (see module docstring)."""
    return (loss, cost, len(rows), tuple(sorted(rows)))


def apply_max_loss(table: CandidateTable, losses: np.ndarray,
                   max_loss: Mapping[str, float] | None) -> np.ndarray:
    """The (M, T) loss matrix with entries above a task's hard limit set to ``inf``.

    A solution meets the limits iff every task's served loss is within its limit, i.e.
    iff some chosen network reaches it; masking the losses above the limit therefore
    leaves exactly the valid solutions and their served losses unchanged (the paper's
    application-specific BETTER, appendix A.1). Raises BadInput for an unknown task or
    a limit that is not a finite number.
    """
    if not max_loss:
        return losses
    from branchnet.errors import unknown_choice
    out = losses.copy()
    for task, limit in max_loss.items():
        if task not in table.tasks:
            raise unknown_choice("task in the loss limits", task, table.tasks)
        limit = float(limit)
        if not math.isfinite(limit):
            raise BadInput(f"loss limit for '{task}' is {limit}; give a finite number")
        column = table.tasks.index(task)
        out[out[:, column] > limit, column] = np.inf
    return out


def evaluate(table: CandidateTable, rows: Iterable[int], budget: float,
             losses: np.ndarray | None = None) -> Selection:
    """Score the set of candidate rows ``rows`` as a :class:`Selection`.

    Each task goes to the chosen network with the lowest loss (ties: the earlier row).
    ``losses`` (M, T) defaults to ``table.loss_matrix()``; pass the masked matrix of
    :func:`apply_max_loss` to honour loss limits. Raises ValueError if a task is not
    covered (callers only evaluate covering sets).
    """
    rows = sorted(set(int(r) for r in rows))
    if losses is None:
        losses = table.loss_matrix()
    sub = losses[rows]
    best = np.argmin(sub, axis=0)  # first minimum: the earlier row wins ties
    served = sub[best, np.arange(len(table.tasks))]
    if not np.all(np.isfinite(served)):
        raise ValueError("evaluate() needs a set of networks that covers every task")
    names = table.names
    return Selection(
        budget=float(budget),
        cost=total(table.candidates[r].cost for r in rows),
        total_loss=total(served.tolist()),
        networks=tuple(names[r] for r in rows),
        assignment={t: names[rows[b]] for t, b in zip(table.tasks, best.tolist())},
        task_losses={t: float(v) for t, v in zip(table.tasks, served.tolist())},
    )

"""The cheapest set of networks that covers every task (a weighted set cover).

It gives the least budget under which :func:`branchnet.selection.select_networks` has
any solution, so that a budget below it can be reported with the minimum to use.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from branchnet.selection.candidates import CandidateTable
from branchnet.selection.solution import apply_max_loss

#: Task counts up to this use the exact subset DP; above it, a MILP.
_DP_MAX_TASKS = 20


def cheapest_cover_cost(solves: np.ndarray, costs: np.ndarray) -> float:
    """Least total cost of rows of ``solves`` that together cover every column.

    Args:
        solves: bool (M, T), ``[n, t]`` true where network n solves task t.
        costs: float (M,), each network's cost (>= 0).

    Returns:
        The minimum cost, or ``inf`` when some task is solved by no network.
    """
    solves = np.asarray(solves, dtype=bool)
    costs = np.asarray(costs, dtype=np.float64)
    n_tasks = solves.shape[1]
    if not solves.any(axis=0).all():
        return float("inf")
    if n_tasks <= _DP_MAX_TASKS:
        return _cover_dp(solves, costs)
    return _cover_milp(solves, costs)


def _cover_dp(solves: np.ndarray, costs: np.ndarray) -> float:
    # dp[mask] = least cost of a set of networks covering exactly the tasks in mask,
    # one network at a time (0/1: each network used at most once).
    n_tasks = solves.shape[1]
    weights = 1 << np.arange(n_tasks, dtype=np.int64)
    masks = (solves.astype(np.int64) * weights).sum(axis=1)
    dp = np.full(1 << n_tasks, np.inf)
    dp[0] = 0.0
    states = np.arange(1 << n_tasks, dtype=np.int64)
    for mask, cost in zip(masks.tolist(), costs.tolist()):
        reached = np.isfinite(dp)
        np.minimum.at(dp, states[reached] | mask, dp[reached] + cost)
    return float(dp[-1])


def _cover_milp(solves: np.ndarray, costs: np.ndarray) -> float:
    from scipy.optimize import Bounds, LinearConstraint, milp

    result = milp(costs, integrality=np.ones(len(costs)), bounds=Bounds(0, 1),
                  constraints=[LinearConstraint(solves.T.astype(float), lb=1, ub=np.inf)],
                  options={"mip_rel_gap": 0})
    if result.x is None:  # pragma: no cover - only when some task is unsolvable, caught above
        return float("inf")
    chosen = result.x > 0.5
    return float(np.sum(costs[chosen]))


def minimum_budget(table: CandidateTable, max_loss: Mapping[str, float] | None = None) -> float:
    """The cost of the cheapest set of networks that covers every task.

    With ``max_loss`` only networks within a task's limit count as covering it; the
    result is ``inf`` when some task's limit is below every network's loss on it.
    A budget below this has no solution.
    """
    losses = apply_max_loss(table, table.loss_matrix(), max_loss)
    return cheapest_cover_cost(np.isfinite(losses), table.costs())

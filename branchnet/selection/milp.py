"""Network selection as a mixed-integer linear program (scipy.optimize.milp / HiGHS).

An independent formulation of the problem of Standley et al., Sec. 3.2 (they note a
binary integer program gives the same solutions as Algorithm 1), used to cross-check
the branch and bound in tests and in ``tools/bench_select.py``::

    minimise    sum_{n,t} L(n,t) y[n,t]
    subject to  sum_n y[n,t] = 1              for every task t   (each task served once)
                y[n,t] <= x[n]                 for every pair     (only by a chosen network)
                sum_n c_n x[n] <= budget
                x[n] in {0, 1},  0 <= y[n,t] <= 1   (y[n,t] only where n solves t)

For fixed x the y-problem sends each task to its cheapest chosen network, so an
optimal y is integral without requiring it. Ties follow docs/design.md lexicographically:
a second solve minimises the cost among solutions of optimal loss and a third the
number of networks among those (the last tie-break, table order, is not modelled).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from branchnet.selection.branch_bound import _check_limits_reachable, check_budget, infeasible
from branchnet.selection.candidates import CandidateTable
from branchnet.selection.solution import BUDGET_RTOL, Selection, apply_max_loss, evaluate


def select_milp(table: CandidateTable, budget: float, max_loss: Mapping[str, float] | None = None,
                tie_break: bool = True, time_limit: float | None = None) -> Selection:
    """The optimal selection, solved as a MILP (see the module docstring).

    Args:
        table: the candidate networks.
        budget: the largest total cost (> 0).
        max_loss: optional per-task hard limits on the served loss.
        tie_break: also minimise cost, then the number of networks, among the optima
            (two more solves); otherwise return HiGHS's first optimum.
        time_limit: seconds per solve (None: no limit). A solve that stops on the limit
            raises RuntimeError rather than return a solution that may not be optimal.

    Raises:
        BadInput: as :func:`branchnet.selection.select_networks`.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array, csr_array

    budget = check_budget(budget)
    losses = apply_max_loss(table, table.loss_matrix(), max_loss)
    _check_limits_reachable(table, losses, max_loss)
    costs = table.costs()
    m, n_tasks = losses.shape
    net, task = np.nonzero(np.isfinite(losses))  # one y variable per (network, task) it solves
    k = len(net)
    n_vars = m + k
    y = m + np.arange(k)

    serve_once = coo_array((np.ones(k), (task, y)), shape=(n_tasks, n_vars)).tocsr()
    link = coo_array((np.concatenate([np.ones(k), -np.ones(k)]),
                      (np.concatenate([np.arange(k), np.arange(k)]), np.concatenate([y, net]))),
                     shape=(k, n_vars)).tocsr()
    cost_row = csr_array((costs, (np.zeros(m, dtype=int), np.arange(m))), shape=(1, n_vars))
    loss_obj = np.concatenate([np.zeros(m), losses[net, task]])
    cost_obj = np.concatenate([costs, np.zeros(k)])
    count_obj = np.concatenate([np.ones(m), np.zeros(k)])

    slack = BUDGET_RTOL * max(1.0, budget)
    constraints = [LinearConstraint(serve_once, 1, 1), LinearConstraint(link, -np.inf, 0),
                   LinearConstraint(cost_row, -np.inf, budget + slack)]
    integrality = np.concatenate([np.ones(m), np.zeros(k)])
    options = {"mip_rel_gap": 0.0, "presolve": True}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)

    def solve(objective: np.ndarray):
        result = milp(objective, integrality=integrality, bounds=Bounds(0, 1), constraints=constraints,
                      options=options)
        if result.status == 4:  # HiGHS's presolve fails on some tiny models; solve without it
            result = milp(objective, integrality=integrality, bounds=Bounds(0, 1), constraints=constraints,
                          options={**options, "presolve": False})
        if result.status == 1:
            raise RuntimeError(f"MILP stopped on its time limit ({time_limit} s) before proving optimality")
        return result

    result = solve(loss_obj)
    if result.x is None:
        raise infeasible(table, budget, max_loss)
    rows = np.flatnonzero(result.x[:m] > 0.5)
    if tie_break:
        # Hold the optimal loss (then cost) while minimising the next criterion. HiGHS
        # works to feasibility and integrality tolerances of about 1e-6, so the held
        # value gets that much room; a result that is not better than the one before
        # (possible only when distinct totals lie closer than that) is not taken.
        best = evaluate(table, rows, budget, losses)
        for held, objective in ((loss_obj, cost_obj), (cost_obj, count_obj)):
            value = float(held @ result.x)
            constraints.append(LinearConstraint(csr_array(held[None, :]), -np.inf,
                                                value + 1e-6 * max(1.0, abs(value))))
            result = solve(objective)
            if result.x is None:  # the tolerances can cut off the previous optimum itself
                break
            trial = evaluate(table, np.flatnonzero(result.x[:m] > 0.5), budget, losses)
            if (trial.total_loss, trial.cost, len(trial.networks)) < (best.total_loss, best.cost, len(best.networks)):
                best = trial
        return best
    return evaluate(table, rows, budget, losses)


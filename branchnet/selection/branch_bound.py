"""Exact network selection by branch and bound (Standley et al., appendix A.1, Algorithm 1).

``GETBESTNETWORKS(C_r, S_r, b_r)``: FILTER the candidates (drop those costing more than
the remaining budget ``b_r`` and those that cannot improve ``S_r`` on any task), SORT
them most promising first, then for each candidate ``n`` in turn remove it from ``C_r``,
recurse on ``(C_r, S_r + n, b_r - c_n)`` and keep the BETTER of the best so far and the
child's best. Every subset is reached at most once (a child only sees the candidates
after its own), and FILTER never drops a network an optimal solution needs, so the
result is optimal whatever the sort order.

Algorithm 1 alone enumerates far too many subsets for 10 tasks and 1,033 candidates,
so this implementation also prunes with lower bounds. Each bounds every solution in a
subtree, and a subtree is dropped only when none of its solutions can beat (or, on
equal loss, tie more cheaply than) the best found, so the result stays optimal:

* per task: a task's final loss is at least the least loss the current solution or a
  remaining candidate reaches on it; a task none can serve ends the subtree;
* forced tasks: a task whose next-best loss alone would lift the per-task bound above
  the best must reach its least loss; the networks that do so must fit the budget
  left (and on a tie, not cost more than the best): a set-cover bound on cost;
* knapsack: the loss reduction of a set of networks is at most the sum of their own
  reductions, and their costs must fit the budget left;
* siblings: later siblings only use the candidates after them, so the per-task bound
  over that suffix ends the loop once it cannot win.

Candidates no optimal solution needs are dropped before the search (:func:`undominated`).
At a node that can afford only one more network the choices are scored all at once.

This search serves small tables (up to :data:`PARTITION_MIN_CANDIDATES` candidates,
where it takes a few milliseconds) and tables of more than
:data:`~branchnet.selection.budget_partition.MAX_TASKS` tasks. Larger tables of up to
that many tasks go to :mod:`~branchnet.selection.partition_search`, a search over
partitions of the tasks with Lagrangian and budget-grid bounds, which is exact on any
table (docs/select.md, "Method").

Both searches take :class:`~branchnet.selection.partition_search.Limits`: a time limit
(``time_limit=`` seconds per budget), a node limit, and a progress callback that sees the
incumbent and the proven lower bound. Stopped early, they return the best solution
found, marked not proven optimal, with that lower bound (:class:`Selection`).

BETTER is the ranking of :mod:`branchnet.selection.solution` (least total loss, then
lower cost, fewer networks, earlier rows); per-task hard limits (the application-
specific BETTER the paper mentions) are applied by masking losses above the limit.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from branchnet.errors import BadInput
from branchnet.selection.candidates import CandidateTable, format_number
from branchnet.selection.cover import cheapest_cover_cost
from branchnet.selection.budget_partition import MAX_TASKS
from branchnet.selection.partition_search import Limits, PartitionSearch, SearchResult, SearchStatus
from branchnet.selection.solution import (BUDGET_RTOL, Selection, apply_max_loss, evaluate, fits,
                                         solution_key, total)

_EPS = np.finfo(np.float64).eps

#: Tables of up to MAX_TASKS tasks and more candidates than this go to the partition
#: search; below it, setting that up costs more than it saves (5 tasks, 36 candidates:
#: this search solves in a few milliseconds).
PARTITION_MIN_CANDIDATES = 64


def select_networks(table: CandidateTable, budget: float,
                    max_loss: Mapping[str, float] | None = None, *, time_limit: float | None = None,
                    node_limit: int | None = None,
                    progress: Callable[[SearchStatus], None] | None = None) -> Selection:
    """The optimal set of networks within ``budget`` (Standley et al., Sec. 3.2).

    Args:
        table: the candidate networks.
        budget: the largest total cost allowed (relative cost, > 0).
        max_loss: optional hard limits ``{task: largest acceptable served loss}``.
        time_limit: seconds the search may take (None: until it is proven optimal).
            Once it has a solution the search stops at the limit and returns its best,
            with ``optimal`` False and the proven ``lower_bound`` (see :class:`Selection`).
        node_limit: the same as a number of search nodes (deterministic; for tests).
        progress: called about every 0.25 s with a
            :class:`~branchnet.selection.partition_search.SearchStatus` (incumbent,
            lower bound, gap, nodes, seconds) and once at the end.

    Returns:
        The solution of least total loss whose cost fits ``budget`` and that covers
        every task within its limit; ties go to lower cost, then fewer networks, then
        the earlier rows of the table.

    Raises:
        BadInput: the budget is not a positive number, is below the cheapest covering
            set (the message gives that minimum), or a task cannot meet its limit; the
            time limit is not a positive number of seconds.
    """
    return select_sweep(table, [check_budget(budget)], max_loss, time_limit=time_limit, node_limit=node_limit,
                        progress=progress)[0]


def select_sweep(table: CandidateTable, budgets: Sequence[float],
                 max_loss: Mapping[str, float] | None = None, *, time_limit: float | None = None,
                 node_limit: int | None = None,
                 progress: Callable[[SearchStatus], None] | None = None) -> list[Selection]:
    """:func:`select_networks` at each budget (the paper's Tables 6 and 7).

    Every budget must be at least :func:`~branchnet.selection.minimum_budget`; the
    first one that is not raises BadInput naming the minimum. ``time_limit`` and
    ``node_limit`` apply to each budget on its own.
    """
    if not len(budgets):
        raise BadInput("the sweep has no budgets; give START:STOP:STEP with START <= STOP")
    budgets = [check_budget(b) for b in budgets]
    time_limit = check_time_limit(time_limit)
    if node_limit is not None and (isinstance(node_limit, bool) or not isinstance(node_limit, (int, np.integer))
                                   or node_limit < 1):
        raise BadInput(f"node limit {node_limit!r} must be a whole number >= 1")
    losses = apply_max_loss(table, table.loss_matrix(), max_loss)
    _check_limits_reachable(table, losses, max_loss)
    prepared = Prepared(losses, table.costs(), max(budgets))  # shared by every budget
    selections = []
    for budget in budgets:
        limits = Limits(time_limit, node_limit, progress, budget=budget)
        result = prepared.solve(budget, limits)
        if result.rows is None:
            raise infeasible(table, budget, max_loss)
        selection = evaluate(table, result.rows, budget, losses)
        if not result.optimal:
            selection = dataclasses.replace(selection, optimal=False,
                                            lower_bound=min(float(result.lower_bound), selection.total_loss))
        selections.append(selection)
    return selections


def check_time_limit(value: float | str | None, what: str = "time limit") -> float | None:
    """``value`` as seconds (a float), None for None; BadInput unless a finite number > 0."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{what} '{value}' is not a number; give the seconds the search may take, "
                       "e.g. 60") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadInput(f"{what} {value} must be a positive number of seconds, e.g. 60")
    return seconds


def check_budget(budget: float) -> float:
    """``budget`` as a float; BadInput unless it is a finite number > 0."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise BadInput(f"budget '{budget}' is not a number; give a positive relative cost such as 2.5") from None
    if not math.isfinite(value) or value <= 0:
        raise BadInput(f"budget {budget} must be a positive number such as 2.5")
    return value


def _check_limits_reachable(table: CandidateTable, losses: np.ndarray,
                            max_loss: Mapping[str, float] | None) -> None:
    """BadInput when a task's limit is below every network's loss on it."""
    if not max_loss:
        return
    raw = table.loss_matrix()
    for j, task in enumerate(table.tasks):
        if not np.isfinite(losses[:, j]).any():
            raise BadInput(f"task '{task}' cannot meet its loss limit {float(max_loss[task]):g}: "
                           f"the best network reaches {raw[:, j].min():g}; raise the limit to at least that")


def infeasible(table: CandidateTable, budget: float, max_loss: Mapping[str, float] | None) -> BadInput:
    """The BadInput for a budget under which no solution exists, with the minimum to use."""
    costs = table.costs()
    raw = table.loss_matrix()
    plain = cheapest_cover_cost(np.isfinite(raw), costs)
    if plain > budget and not fits(plain, budget):
        return BadInput(f"budget {budget:g} is below the minimum {format_number(plain)}, the cost of the cheapest "
                        f"set of networks that covers every task; use a budget of at least {format_number(plain)}")
    limited = apply_max_loss(table, raw, max_loss)
    need = cheapest_cover_cost(np.isfinite(limited), costs)
    # Name the task whose limit alone already makes the budget too small, if there is one.
    for task in (max_loss or {}):
        alone = apply_max_loss(table, raw, {task: max_loss[task]})
        if not fits(cheapest_cover_cost(np.isfinite(alone), costs), budget):
            return BadInput(f"task '{task}' cannot meet its loss limit {float(max_loss[task]):g} within budget "
                            f"{budget:g}; the limits need a budget of at least {format_number(need)} "
                            "(or raise the limit)")
    if not max_loss:  # pragma: no cover - the search finds a solution whenever a cover fits
        raise RuntimeError(f"no selection found within budget {budget!r} although a cover of cost {plain!r} fits")
    tasks = ", ".join(f"'{t}'" for t in max_loss)
    return BadInput(f"tasks {tasks} cannot all meet their loss limits within budget {budget:g}; "
                    f"the limits need a budget of at least {format_number(need)} (or raise a limit)")


def undominated(losses: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Rows no optimal solution needs (see the module docstring) removed; sorted row indices.

    Row m dominates row n when ``c_m <= c_n``, ``L_m <= L_n`` on every task (``inf``
    where a network does not solve a task), and m is strictly cheaper, or earlier in
    the table, or strictly better on every task n solves. Replacing n by m in a
    solution then never raises its loss or cost, and in an optimal solution every
    network is the only best one on some task, so the swap strictly lowers the loss
    in the last case.
    """
    m, n_tasks = losses.shape
    solves = np.isfinite(losses)
    dominated = np.zeros(m, dtype=bool)
    if n_tasks <= 62:  # task sets as bit masks: j covers n when mask_j & mask_n == mask_n
        masks = (solves.astype(np.int64) << np.arange(n_tasks, dtype=np.int64)).sum(axis=1)
    else:
        masks = None
        missing = (~solves).astype(np.float64)
    chunk = max(1, 4_000_000 // max(1, m))
    for start in range(0, m, chunk):
        rows = np.arange(start, min(m, start + chunk))
        # [i, j]: row j solves every task row rows[i] solves and costs no more
        if masks is not None:
            covers = (masks[None, :] & masks[rows, None]) == masks[rows, None]
        else:
            covers = (solves[rows].astype(np.float64) @ missing.T) == 0
        pairs = covers & (costs[None, :] <= costs[rows, None])
        pairs[np.arange(rows.size), rows] = False
        n, j = np.nonzero(pairs)
        n = rows[n]
        no_worse = (losses[j] <= losses[n]).all(axis=1)
        n, j = n[no_worse], j[no_worse]
        better = ((losses[j] < losses[n]) | ~solves[n]).all(axis=1)
        strict = (costs[j] < costs[n]) | (j < n) | better
        dominated[n[strict]] = True
    return np.flatnonzero(~dominated)


class Prepared:
    """What the search needs that does not depend on the budget (reused across a sweep).

    Attributes:
        search: the :class:`~branchnet.selection.partition_search.PartitionSearch` for
            budgets up to ``budget`` (up to MAX_TASKS tasks and more than
            PARTITION_MIN_CANDIDATES candidates), else None.
        rows: without it, the candidates :class:`BranchAndBound` searches (those left
            after :func:`undominated`).
    """

    def __init__(self, losses: np.ndarray, costs: np.ndarray, budget: float) -> None:
        self.losses, self.costs = losses, costs
        self.budget = float(budget)
        self.search: PartitionSearch | None = None
        if losses.shape[1] <= MAX_TASKS and len(costs) > PARTITION_MIN_CANDIDATES:
            self.search = PartitionSearch(losses, costs, self.budget)
            self.rows = np.arange(len(costs))
        else:
            self.rows = undominated(losses, costs)

    def solve(self, budget: float, limits: Limits | None = None) -> SearchResult:
        """The best rows within ``budget`` (<= the budget given to the constructor)."""
        if self.search is not None:
            return self.search.solve(budget, limits)
        return BranchAndBound(self.losses, self.costs, budget, self, limits).run()


class _Stop(Exception):
    """Raised inside the search when a limit is reached."""


class BranchAndBound:
    """Algorithm 1 with bounds. ``run()`` returns a :class:`SearchResult`, ``solve()`` its rows.

    Args:
        losses: float (M, T), ``inf`` where a network does not solve a task (or is above
            the task's limit).
        costs: float (M,), >= 0.
        budget: the largest total cost.
        prepared: :class:`Prepared` for these losses and costs (its ``rows`` are searched;
            without it, those :func:`undominated` leaves).
        limits: when to stop early (once a first solution is found), and whom to tell
            how the search stands.
    """

    def __init__(self, losses: np.ndarray, costs: np.ndarray, budget: float,
                 prepared: Prepared | None = None, limits: Limits | None = None) -> None:
        self.losses = np.ascontiguousarray(losses, dtype=np.float64)
        self.costs = np.asarray(costs, dtype=np.float64)
        self.prepared = prepared
        self.budget = float(budget)
        self.limits = limits
        # FILTER keeps anything within twice the budget slack; solutions are then
        # checked exactly with fits() so nothing that fits is ever filtered out.
        self.slack = 2 * BUDGET_RTOL * max(1.0, abs(self.budget))
        finite = np.where(np.isfinite(self.losses), self.losses, -np.inf)
        # ref[t]: the worst loss any network has on t, an upper cap on t's served loss.
        self.ref = finite.max(axis=0) if len(finite) else np.zeros(self.losses.shape[1])
        self.best_key: tuple | None = None
        self.best_rows: list[int] | None = None
        self.nodes = 0
        # One entry per node on the recursion path: a lower bound on every solution its
        # loop has not finished with (the least of them bounds all that is left to search).
        self._open: list[float] = []

    # -- BETTER ------------------------------------------------------------------
    def _offer(self, served: np.ndarray, rows: list[int]) -> None:
        """BETTER(Best, S): keep ``rows`` (served losses ``served``) if it is a better solution."""
        cost = total(self.costs[rows].tolist())
        if not fits(cost, self.budget) or not np.isfinite(served).all():
            return
        key = solution_key(total(served.tolist()), cost, rows)
        if self.best_key is None or key < self.best_key:
            self.best_key, self.best_rows = key, sorted(rows)

    def _cannot_win(self, bound: float, cost: float) -> bool:
        """Whether every solution with loss >= bound and cost >= cost loses to the best."""
        if self.best_key is None:
            return False
        best_loss, best_cost = self.best_key[0], self.best_key[1]
        return bound > best_loss or (bound == best_loss and cost > best_cost)

    def _lower_bound(self) -> float:
        """A lower bound on every solution: the best's loss and the open nodes' bounds."""
        lower = min(self._open, default=math.inf)
        return lower if self.best_key is None else min(lower, self.best_key[0])

    # -- search ------------------------------------------------------------------
    def solve(self) -> list[int] | None:
        """The optimal rows (None: no solution fits); see :meth:`run`."""
        return self.run().rows

    def run(self) -> SearchResult:
        """Search (to the end, or until the limits stop it once a solution is found)."""
        rows = self.prepared.rows if self.prepared is not None else undominated(self.losses, self.costs)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, len(rows) + 200))
        stopped = False
        try:
            self._node(np.full(self.losses.shape[1], np.inf), [], rows)
        except _Stop:
            stopped = True
        finally:
            sys.setrecursionlimit(limit)
        lower = self._lower_bound() if stopped else (self.best_key[0] if self.best_key else math.inf)
        self._open = []
        if self.limits is not None:
            self.limits.report(None if self.best_key is None else self.best_key[0], lower, self.nodes, done=True)
        return SearchResult(self.best_rows, not stopped, lower, self.nodes)

    def _check_limits(self) -> None:
        """Stop (raise _Stop) when a limit is reached and a solution is known; report progress."""
        if self.limits is None or self.best_key is None:
            return
        if self.limits.reached(self.nodes):
            raise _Stop
        if self.limits.progress is not None:
            self.limits.report(self.best_key[0], self._lower_bound(), self.nodes)

    def _node(self, cur: np.ndarray, chosen: list[int], cand: np.ndarray) -> None:
        """GETBESTNETWORKS(C_r=cand, S_r=chosen) where ``cur`` is S_r's served loss per task."""
        self.nodes += 1
        self._check_limits()
        costs = self.costs
        cost = total(costs[chosen].tolist())
        remaining = self.budget - cost
        covered = bool(np.isfinite(cur).all())
        if covered:  # Best <- S_r (line 4)
            self._offer(cur, chosen)

        # FILTER (lines 12-15)
        sub = self.losses[cand]
        keep = (costs[cand] <= remaining + self.slack) & (sub < cur).any(axis=1)
        cand, sub = cand[keep], sub[keep]
        if cand.size == 0:
            return
        sub_costs = costs[cand]

        # Per-task bound over the whole subtree.
        reach = np.minimum(cur, sub.min(axis=0))
        if not np.isfinite(reach).all():
            return
        lower = total(reach.tolist())
        if self._cannot_win(lower, cost):
            return
        if self.best_key is not None and self._cover_prunes(cur, reach, lower, sub, sub_costs, cost, remaining):
            return

        capped = np.minimum(cur, self.ref)
        gains = np.maximum(capped - sub, 0.0).sum(axis=1)  # each candidate's own loss reduction
        margin = 1e-9 * (1.0 + abs(self.best_key[0])) if self.best_key else 0.0  # these bounds are not exactly rounded
        # Budget (knapsack) bound: reductions add up at most, and must fit the budget.
        bound = total(capped.tolist()) - _fractional_knapsack(gains, sub_costs, remaining + self.slack)
        if self.best_key is not None and bound > self.best_key[0] + margin:
            return
        node_bound = max(lower, bound - margin)

        # Only one more network fits: score every choice at once.
        if cand.size == 1 or np.partition(sub_costs, 1)[:2].sum() > remaining + self.slack:
            self._last_choice(cur, chosen, cand, sub)
            return

        children = np.minimum(cur, sub)  # (K, T) each child's served losses
        # SORT (line 3): most promising first: largest loss reduction, then cheaper, then table order.
        order = np.lexsort((cand, sub_costs, -gains))
        cand, sub, children = cand[order], sub[order], children[order]
        suffix = np.minimum.accumulate(sub[::-1], axis=0)[::-1]
        suffix = np.vstack([suffix, np.full((1, sub.shape[1]), np.inf)])
        self._open.append(node_bound)
        for i in range(cand.size):  # lines 5-10
            rest = np.minimum(cur, suffix[i])
            if not np.isfinite(rest).all():
                break  # no later sibling can beat the best either
            rest_loss = total(rest.tolist())
            if self._cannot_win(rest_loss, cost):
                break
            self._open[-1] = max(node_bound, rest_loss)  # every solution of children i, i+1, ...
            n = int(cand[i])
            reach = np.minimum(children[i], suffix[i + 1])
            if not np.isfinite(reach).all():
                continue
            if self._cannot_win(total(reach.tolist()), cost + costs[n] * (1 - 4 * _EPS)):
                continue
            self._node(children[i], chosen + [n], cand[i + 1:])
        self._open.pop()

    def _cover_prunes(self, cur: np.ndarray, reach: np.ndarray, lower: float, sub: np.ndarray,
                      sub_costs: np.ndarray, cost: float, remaining: float) -> bool:
        """Prune by the cost of reaching the tasks that must reach their least loss.

        A task t is forced when settling for its next-best loss alone would already put
        the per-task bound above the best total: every completion that can still win
        serves t at ``reach[t]``, so it contains networks reaching every forced task.
        Their least cost (each network's cost shared among the forced tasks it reaches,
        a set-cover lower bound) must fit the budget left, and, when even the per-task
        bound only ties the best, must not make the solution dearer than the best.
        """
        best_loss, best_cost = self.best_key[0], self.best_key[1]
        open_tasks = reach < cur
        if not open_tasks.any():
            return False
        attains = sub == reach  # (K, T)
        second = np.minimum(np.where(sub > reach, sub, np.inf).min(axis=0), cur)
        slack = best_loss - lower + 1e-12 * (1.0 + abs(best_loss))
        forced = open_tasks & (second - reach > slack)
        if not forced.any():
            return False
        attains &= forced
        counts = attains.sum(axis=1)
        useful = counts > 0
        shares = np.where(attains[useful], (sub_costs[useful] / counts[useful])[:, None], np.inf)
        need = float(shares.min(axis=0)[forced].sum())
        if need > remaining + self.slack:
            return True
        return lower == best_loss and cost + need > best_cost + 1e-9 * max(1.0, abs(best_cost))

    def _last_choice(self, cur: np.ndarray, chosen: list[int], cand: np.ndarray, sub: np.ndarray) -> None:
        """Offer S_r + n for every n in ``cand`` (when no two more networks fit)."""
        served = np.minimum(cur, sub)
        ok = np.isfinite(served).all(axis=1)
        if not ok.any():
            return
        served, cand = served[ok], cand[ok]
        approx = served.sum(axis=1)  # fast; exact totals are taken for the few near the least
        margin = 4 * _EPS * (len(cur) + 1) * (np.abs(approx).max() + 1.0)
        first = None  # approximate total of the best single that fits
        for i in np.argsort(approx, kind="stable").tolist():
            if first is not None and approx[i] > first + margin:
                break
            if self.best_key is not None and approx[i] > self.best_key[0] + margin:
                break
            rows = chosen + [int(cand[i])]
            if not fits(total(self.costs[rows].tolist()), self.budget):
                continue
            first = approx[i] if first is None else first
            self._offer(served[i], rows)


def _fractional_knapsack(values: np.ndarray, weights: np.ndarray, capacity: float) -> float:
    """The fractional knapsack optimum: an upper bound on the 0/1 knapsack."""
    useful = values > 0
    values, weights = values[useful], weights[useful]
    if values.size == 0:
        return 0.0
    free = weights <= 0
    gained = float(values[free].sum())
    values, weights = values[~free], weights[~free]
    if values.size == 0 or capacity <= 0:
        return gained
    order = np.argsort(-values / weights, kind="stable")
    values, weights = values[order], weights[order]
    filled = np.cumsum(weights)
    whole = int(np.searchsorted(filled, capacity, side="right"))
    gained += float(values[:whole].sum())
    if whole < values.size:
        room = capacity - (filled[whole - 1] if whole else 0.0)
        gained += float(values[whole]) * max(0.0, room) / float(weights[whole])
    return gained * (1 + 1e-12)

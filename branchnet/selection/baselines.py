"""The paper's control baselines for a budget: random selections and the worst selection.

Standley et al. (Sec. 4.3) compare the optimal choice with "Random", valid random task
groupings that solve all tasks, averaged over many trials, and "Pessimal", the choice
of networks with the worst overall performance, each task still served by its best
network among those chosen. On a candidate table this module defines them as the
authors' release computes them:

Random selection within budget ``b``. Go through the candidate networks in a uniformly
random order and take each one that still fits the budget left; the draw is the set
taken (no network left out then fits). A draw that leaves a task uncovered is rejected
and drawn again. Since a network that does not fit never fits later, this is the same
as: repeatedly take a network uniformly at random among those not taken that fit the
budget left, until none fits. The baseline is the expected total loss of an accepted
draw, each task served by its best network in the draw, estimated by the mean over
``draws`` accepted draws from a seeded generator (:func:`random_baseline`; the exact
expectation of small tables: :func:`expected_random_loss`).

Worst selection within budget ``b``: among the selections a random draw can give
(covering every task, within the budget, and maximal: no further network fits), the
one of greatest total loss (:func:`worst_selection`, solved exactly as a MILP; the
release estimates it as the worst of many random draws).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from branchnet.errors import BadInput
from branchnet.selection.candidates import CandidateTable
from branchnet.selection.solution import BUDGET_RTOL, Selection, evaluate, fits

#: Draws per budget by default (the paper: "the average of a thousand random trials").
DEFAULT_DRAWS = 1000

#: Draws are tried at most this many times ``draws`` before giving up on more accepted ones.
MAX_TRIES_PER_DRAW = 50

# Random draws are made this many at a time (memory: this times the number of networks).
_BATCH = 256


def _tolerance(budget: float) -> float:
    return BUDGET_RTOL * max(1.0, abs(budget))


def _masks(table: CandidateTable) -> np.ndarray:
    """Each network's tasks as a bool row (M, T)."""
    return np.isfinite(table.loss_matrix())


@dataclass(frozen=True)
class RandomBaseline:
    """The random-selection baseline at one budget.

    Attributes:
        budget: the budget.
        mean_total_loss: the mean total loss of the accepted draws (None if none was).
        std_error: the standard error of that mean.
        draws: accepted draws; rejected: draws that left a task uncovered.
        seed: the generator's seed.
        test_mean_total_loss: the same draws scored on a second table (None without one).
    """

    budget: float
    mean_total_loss: float | None
    std_error: float | None
    draws: int
    rejected: int
    seed: int
    test_mean_total_loss: float | None = None
    test_std_error: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"mean_total_loss": self.mean_total_loss, "std_error": self.std_error, "draws": self.draws,
               "rejected": self.rejected, "seed": self.seed}
        if self.test_mean_total_loss is not None:
            out["test_mean_total_loss"] = self.test_mean_total_loss
            out["test_std_error"] = self.test_std_error
        return out


def draw_random_selections(table: CandidateTable, budget: float, draws: int = DEFAULT_DRAWS, seed: int = 0,
                           max_tries: int | None = None) -> tuple[list[list[int]], int]:
    """Random selections within ``budget`` (see the module docstring).

    Args:
        table: the candidates.
        budget: the budget (> 0).
        draws: how many accepted draws to make.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same draws.
        max_tries: stop after this many draws in all, accepted or not (default
            ``MAX_TRIES_PER_DRAW * draws``), so that a budget that rarely covers every
            task ends; fewer draws are then returned.

    Returns:
        The accepted draws (each a sorted list of rows of ``table``) and the number of
        rejected ones.
    """
    if draws < 1:
        raise BadInput(f"the number of random draws must be at least 1, got {draws}")
    rng = np.random.default_rng(seed)
    costs = table.costs()
    solves = _masks(table)
    limit = budget + _tolerance(budget)
    max_tries = MAX_TRIES_PER_DRAW * draws if max_tries is None else int(max_tries)
    accepted: list[list[int]] = []
    rejected = tried = 0
    while len(accepted) < draws and tried < max_tries:
        batch = min(_BATCH, max_tries - tried)
        tried += batch
        left = np.full(batch, float(limit))
        taken = np.zeros((batch, len(costs)), dtype=bool)
        while True:
            fit = (costs[None, :] <= left[:, None]) & ~taken
            open_ = fit.any(axis=1)
            if not open_.any():
                break
            keys = np.where(fit, rng.random(fit.shape), -1.0)
            pick = keys.argmax(axis=1)
            rows = np.flatnonzero(open_)
            taken[rows, pick[rows]] = True
            left[rows] -= costs[pick[rows]]
        covers = (taken.astype(np.int64) @ solves.astype(np.int64)) > 0
        for i in range(batch):
            if covers[i].all():
                if len(accepted) < draws:
                    accepted.append(np.flatnonzero(taken[i]).tolist())
            else:
                rejected += 1
    return accepted, rejected


def _mean_and_error(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def random_baseline(table: CandidateTable, budget: float, draws: int = DEFAULT_DRAWS, seed: int = 0,
                    test: CandidateTable | None = None) -> RandomBaseline:
    """The mean total loss of random selections within ``budget`` (Monte Carlo, seeded).

    ``test``: a second table of the same networks (:func:`~branchnet.selection.tables.match_tables`);
    the same draws are then scored on it too (the paper reports the baselines on test).
    """
    selections, rejected = draw_random_selections(table, budget, draws, seed)
    losses = table.loss_matrix()
    totals = [math.fsum(losses[rows].min(axis=0).tolist()) for rows in selections]
    mean, error = _mean_and_error(totals)
    test_mean = test_error = None
    if test is not None:
        where = {name: i for i, name in enumerate(test.names)}
        order = [test.tasks.index(t) for t in table.tasks]
        test_losses = test.loss_matrix()[:, order]
        rows_there = np.array([where[name] for name in table.names], dtype=np.int64)
        test_mean, test_error = _mean_and_error(
            [math.fsum(test_losses[rows_there[rows]].min(axis=0).tolist()) for rows in selections])
    return RandomBaseline(float(budget), mean, error, len(selections), rejected, int(seed), test_mean, test_error)


def expected_random_loss(table: CandidateTable, budget: float) -> float:
    """The exact expected total loss of a random selection (module docstring), by enumeration.

    Exponential in the number of networks: for small tables (tests, checks of
    :func:`random_baseline`). Raises BadInput when no draw covers every task.
    """
    costs = table.costs()
    losses = table.loss_matrix()
    limit = budget + _tolerance(budget)
    memo: dict[frozenset[int], tuple[float, float]] = {}

    def walk(taken: frozenset[int], left: float) -> tuple[float, float]:
        """(probability that the draw covers every task, sum of probability x loss) from here."""
        if taken in memo:
            return memo[taken]
        fit = [n for n in range(len(costs)) if n not in taken and costs[n] <= left]
        if not fit:
            served = losses[sorted(taken)].min(axis=0) if taken else np.full(losses.shape[1], np.inf)
            result = (1.0, math.fsum(served.tolist())) if np.isfinite(served).all() else (0.0, 0.0)
        else:
            parts = [walk(taken | {n}, left - costs[n]) for n in fit]
            result = (math.fsum(p for p, _ in parts) / len(fit), math.fsum(e for _, e in parts) / len(fit))
        memo[taken] = result
        return result

    covered, weighted = walk(frozenset(), limit)
    if covered == 0:
        raise BadInput(f"no random selection within budget {budget:g} covers every task")
    return weighted / covered


@dataclass(frozen=True)
class WorstSelection:
    """The worst selection at one budget (module docstring) and, optionally, the worst on a second table."""

    selection: Selection
    test: Selection | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        out = {"total_loss": self.selection.total_loss, "cost": self.selection.cost,
               "networks": list(self.selection.networks)}
        if self.test is not None:
            out["test_total_loss"] = self.test.total_loss
            out["test_networks"] = list(self.test.networks)
        return out


def is_maximal(costs: np.ndarray, rows: list[int], budget: float) -> bool:
    """Whether no network outside ``rows`` fits the budget left by ``rows``."""
    spent = math.fsum(costs[rows].tolist())
    outside = np.setdiff1d(np.arange(len(costs)), rows)
    return not any(fits(spent + float(c), budget) for c in costs[outside].tolist())


def worst_selection(table: CandidateTable, budget: float, time_limit: float | None = None) -> Selection:
    """The maximal covering selection within ``budget`` of greatest total loss (exact, MILP).

    ``maximise sum_t z_t`` over binary ``x_n`` (network n taken), with ``z_t <= L(n,t)``
    for every taken network n solving t (big-M on ``1 - x_n``), every task covered, the
    cost ``s = sum_n c_n x_n <= b``, and for every network n that can fit alone,
    ``s >= (b - c_n + delta) (1 - x_n)`` (left out only if it does not fit). Then each
    ``z_t`` is the served loss and the objective the selection's total loss.

    Raises:
        BadInput: no selection within ``budget`` covers every task.
        RuntimeError: the MILP stopped on ``time_limit``.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    costs = table.costs()
    losses = table.loss_matrix()
    m, n_tasks = losses.shape
    net, task = np.nonzero(np.isfinite(losses))
    top = np.where(np.isfinite(losses), losses, -np.inf).max(axis=0)  # (T,) worst loss on each task
    # variables: x (m), z (T), s (1)
    z0, s0 = m, m + n_tasks
    n_vars = m + n_tasks + 1
    rows, cols, vals, lower, upper = [], [], [], [], []

    def add(entries: list[tuple[int, float]], lo: float, hi: float) -> None:
        r = len(lower)
        for c, v in entries:
            rows.append(r)
            cols.append(c)
            vals.append(v)
        lower.append(lo)
        upper.append(hi)

    for n, t in zip(net.tolist(), task.tolist()):  # z_t + (top_t - L) x_n <= top_t
        gap = float(top[t] - losses[n, t])
        add([(z0 + t, 1.0), (n, gap)], -np.inf, float(top[t]))
    for t in range(n_tasks):  # every task covered
        add([(n, 1.0) for n in np.flatnonzero(np.isfinite(losses[:, t])).tolist()], 1.0, np.inf)
    add([(s0, 1.0)] + [(n, -float(costs[n])) for n in range(m)], 0.0, 0.0)  # s = cost
    tol = _tolerance(budget)
    delta = tol + 1e-7 * max(1.0, abs(budget))
    for n in range(m):  # left out only when it does not fit: s + (b - c_n + delta) x_n >= b - c_n + delta
        need = float(budget - costs[n] + delta)
        if need > 0 and fits(float(costs[n]), budget):
            add([(s0, 1.0), (n, need)], need, np.inf)
    matrix = coo_array((vals, (rows, cols)), shape=(len(lower), n_vars)).tocsr()
    objective = np.zeros(n_vars)
    objective[z0:z0 + n_tasks] = -1.0
    integrality = np.zeros(n_vars)
    integrality[:m] = 1
    upper_bounds = np.concatenate([np.ones(m), top, [budget + tol]])
    options = {"mip_rel_gap": 0.0}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    result = milp(objective, integrality=integrality, bounds=Bounds(np.zeros(n_vars), upper_bounds),
                  constraints=[LinearConstraint(matrix, np.array(lower), np.array(upper))], options=options)
    if result.status == 1:
        raise RuntimeError(f"the worst-selection MILP stopped on its time limit ({time_limit} s)")
    if result.x is None:
        raise BadInput(f"no selection within budget {budget:g} covers every task")
    chosen = np.flatnonzero(result.x[:m] > 0.5).tolist()
    selection = evaluate(table, chosen, budget)
    if not fits(selection.cost, budget) or not is_maximal(costs, chosen, budget):  # pragma: no cover
        raise RuntimeError(f"the worst-selection MILP returned a selection that is not valid at budget {budget!r}")
    return selection


def worst_baseline(table: CandidateTable, budget: float, test: CandidateTable | None = None) -> WorstSelection:
    """:func:`worst_selection` on ``table`` and, with ``test`` (same networks), on ``test`` as well."""
    worst = worst_selection(table, budget)
    test_worst = None
    if test is not None:
        restricted = CandidateTable(table.tasks, tuple(test.candidate(name) for name in table.names))
        test_worst = worst_selection(restricted, budget)
    return WorstSelection(worst, test_worst)

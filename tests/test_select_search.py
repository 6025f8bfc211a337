"""The exact selection on tables it was not tuned on (issue 25): generator families, ties, limits.

Every family of ``branchnet.selection.synthetic.FAMILIES`` is checked against brute force
(small tables, both searches) and against the MILP (larger ones, the partition search);
stopping early (a node or time limit) must return a valid selection whose proven lower
bound is below the true optimum. No assertion depends on how long anything takes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

import branchnet.selection.branch_bound as bb_module
from branchnet.errors import BadInput
from branchnet.selection import (Candidate, CandidateTable, minimum_budget, select_milp, select_networks,
                                 select_sweep)
from branchnet.selection.partition_search import BlockFronts, Limits, PartitionSearch
from branchnet.selection.solution import fits
from branchnet.selection.synthetic import FAMILIES, family_table, paper_like_table


def brute_force(table: CandidateTable, budget: float):
    """The best (loss, cost, count, rows) over all subsets, straight from docs/design.md."""
    losses, costs = table.loss_matrix(), table.costs()
    best = None
    for size in range(1, len(costs) + 1):
        for rows in itertools.combinations(range(len(costs)), size):
            cost = math.fsum(costs[list(rows)])
            if not fits(cost, budget):
                continue
            served = losses[list(rows)].min(axis=0)
            if np.isfinite(served).all():
                key = (math.fsum(served), cost, size, rows)
                if best is None or key < best:
                    best = key
    return best


def key_of(table: CandidateTable, selection) -> tuple:
    rows = tuple(sorted(table.names.index(n) for n in selection.networks))
    return (selection.total_loss, selection.cost, len(rows), rows)


def rounded(table: CandidateTable, loss_digits: int, cost_digits: int) -> CandidateTable:
    """The table with losses and costs rounded (many exact ties), costs kept above 0."""
    step = 10.0 ** -cost_digits
    return CandidateTable(table.tasks, tuple(
        Candidate(c.name, max(round(c.cost, cost_digits), step),
                  {t: round(v, loss_digits) for t, v in c.losses.items()}) for c in table.candidates))


def budgets_for(table: CandidateTable) -> list[float]:
    low = minimum_budget(table)
    return [math.ceil(low * 1000) / 1000, round(low + 0.6, 3), round(low * 2 + 0.3, 3)]


# -- the families ---------------------------------------------------------------------------------
def test_families_are_what_they_say():
    for family in FAMILIES:
        table = family_table(family, 6, 80, seed=3)
        again = family_table(family, 6, 80, seed=3)
        assert table == again and table != family_table(family, 6, 80, seed=4)
        assert len(table.candidates) == 80
        assert np.isfinite(table.loss_matrix()).any(axis=0).all()  # every task covered
    sizes = lambda t: np.array([len(c.losses) for c in t.candidates])  # noqa: E731
    prop = family_table("proportional", 8, 300, seed=0)
    assert np.all(np.abs(prop.costs() / sizes(prop) / 0.2 - 1) <= 0.2 + 1e-12)
    dec = family_table("decimals", 8, 300, seed=0).costs()
    assert np.allclose(dec, np.round(dec, 3)) and len(np.unique(dec)) > 200
    huge = family_table("huge-cheap", 12, 1000, seed=0)
    assert sum(1 for c in huge.candidates if len(c.losses) >= 10 and c.cost <= 0.4) >= 2
    heavy = family_table("heavy-tailed", 8, 2000, seed=0).costs()
    assert np.median(heavy) < 0.15 and heavy.max() > 20 * np.median(heavy)
    every = sizes(family_table("every-size", 8, 800, seed=0))
    assert set(every.tolist()) == set(range(1, 9))
    with pytest.raises(BadInput, match="unknown table family"):
        family_table("nope", 4, 10)


@pytest.mark.parametrize("forced", [False, True], ids=["algorithm-1", "partition-search"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_families_match_brute_force(monkeypatch, family, forced):
    # Small tables go to Algorithm 1; forcing the partition search checks it on the same ones.
    if forced:
        monkeypatch.setattr(bb_module, "PARTITION_MIN_CANDIDATES", 0)
    checked = 0
    for n_tasks, n_candidates, seed in ((3, 9, 0), (4, 10, 1), (5, 11, 2), (4, 11, 3)):
        table = family_table(family, n_tasks, n_candidates, seed)
        for budget in budgets_for(table)[:2]:
            assert key_of(table, select_networks(table, budget)) == brute_force(table, budget), (seed, budget)
            checked += 1
    assert checked == 8


@pytest.mark.parametrize("digits", [(1, 1), (0, 0)], ids=["one-decimal", "integers"])
@pytest.mark.parametrize("family", ["independent", "proportional", "heavy-tailed", "every-size"])
def test_rounded_families_break_ties_as_brute_force(monkeypatch, family, digits):
    # Rounded losses and costs: many selections tie on loss, cost and count; the
    # partition search must still return the one the definition names.
    monkeypatch.setattr(bb_module, "PARTITION_MIN_CANDIDATES", 0)
    for n_tasks, n_candidates, seed in ((3, 10, 5), (4, 10, 6), (5, 11, 7)):
        table = rounded(family_table(family, n_tasks, n_candidates, seed), *digits)
        for budget in budgets_for(table):
            assert key_of(table, select_networks(table, budget)) == brute_force(table, budget), (seed, budget)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_families_match_milp(family):
    # Above 64 candidates: the partition search, against the independent MILP.
    for n_tasks, n_candidates, seed in ((6, 100, 0), (7, 80, 1)):
        table = family_table(family, n_tasks, n_candidates, seed)
        for budget in budgets_for(table)[1:]:
            bb, milp = select_networks(table, budget), select_milp(table, budget)
            assert bb.optimal and bb.gap == 0.0
            assert bb.total_loss == pytest.approx(milp.total_loss, abs=1e-9)
            assert bb.total_loss <= milp.total_loss + 1e-12
            if bb.total_loss == milp.total_loss:
                assert (bb.cost, len(bb.networks)) <= (milp.cost + 1e-9, len(milp.networks))


def test_sweep_of_a_family_matches_single_solves():
    table = family_table("decimals", 8, 400, seed=2)
    budgets = [1.0, 1.7, 2.4, 3.1]
    swept = select_sweep(table, budgets)
    assert [key_of(table, s) for s in swept] == [key_of(table, select_networks(table, b)) for b in budgets]
    assert all(a.total_loss >= b.total_loss for a, b in zip(swept, swept[1:]))


# -- the fronts ---------------------------------------------------------------------------------------
def test_fronts_keep_a_best_network_for_every_block():
    # A block's front holds, for every budget, a network of least loss on the block at that cost.
    table = family_table("every-size", 5, 120, seed=4)
    losses, costs = table.loss_matrix(), table.costs()
    fronts = BlockFronts(losses, costs, 3.0, 1e-9)
    solves = np.isfinite(losses)
    for block in range(1, 32):
        tasks = [t for t in range(5) if block >> t & 1]
        able = np.flatnonzero(solves[:, tasks].all(axis=1) & (costs <= 3.0))
        entries = slice(fronts.start[block], fronts.start[block] + fronts.count[block])
        assert fronts.count[block] == 0 if able.size == 0 else fronts.count[block] > 0
        for limit in np.unique(costs[able]):
            within = able[costs[able] <= limit]
            best = losses[within][:, tasks].sum(axis=1).min()
            mine = fronts.loss[entries][fronts.cost[entries] <= limit]
            assert mine.min() == pytest.approx(best, abs=1e-12)


# -- stopping early: a valid selection and a proven bound ----------------------------------------
def heads_table(n_tasks: int, seed: int) -> CandidateTable:
    """All groups of the paper's kind, each network paying 1.3 % per extra task (off any grid)."""
    table = paper_like_table(n_tasks, seed)
    return CandidateTable(table.tasks, tuple(Candidate(c.name, c.cost * (1 + 0.013 * (len(c.losses) - 1)), c.losses)
                                             for c in table.candidates))


def check_valid(table: CandidateTable, selection, budget: float, optimum: float) -> None:
    assert fits(selection.cost, budget)
    assert selection.cost == math.fsum(table.candidate(n).cost for n in selection.networks)
    assert set(selection.assignment) == set(table.tasks)
    assert selection.total_loss == math.fsum(selection.task_losses.values())
    assert selection.proven_lower_bound <= optimum + 1e-12 <= selection.total_loss + 2e-12
    assert selection.gap >= 0.0
    data = selection.to_json()
    assert data["optimal"] is selection.optimal and data["gap"] == selection.gap
    assert data["lower_bound"] == selection.proven_lower_bound <= data["total_loss"]


@pytest.mark.parametrize("forced_algorithm_1", [False, True], ids=["partition-search", "algorithm-1"])
def test_node_limit_returns_a_valid_selection_with_a_proven_bound(monkeypatch, forced_algorithm_1):
    if forced_algorithm_1:  # as for more than 14 tasks
        monkeypatch.setattr(bb_module, "MAX_TASKS", 0)
    stopped = 0
    for table, budget in ((heads_table(8, 0), 3.0), (heads_table(8, 1), 2.2),
                          (family_table("decimals", 8, 300, 5), 2.0)):
        optimum = select_networks(table, budget)
        assert optimum.optimal and optimum.gap == 0.0
        for limit in (1, 2, 5, 20):
            early = select_networks(table, budget, node_limit=limit)
            check_valid(table, early, budget, optimum.total_loss)
            if early.optimal:
                assert key_of(table, early) == key_of(table, optimum)
            else:
                stopped += 1
    assert stopped >= 3  # the limits did stop these searches


def test_tiny_time_limit_marks_the_selection_not_optimal():
    # Not a timed assertion: the deadline passes before the first node after the root,
    # and this search needs many nodes (node_limit=1 stops it too).
    table, budget = heads_table(8, 0), 3.0
    assert not select_networks(table, budget, node_limit=1).optimal
    optimum = select_networks(table, budget)
    early = select_networks(table, budget, time_limit=1e-9)
    assert not early.optimal and 0.0 <= early.gap
    check_valid(table, early, budget, optimum.total_loss)
    swept = select_sweep(table, [2.5, 3.0], time_limit=1e-9)
    for selection, b in zip(swept, (2.5, 3.0)):
        check_valid(table, selection, b, select_networks(table, b).total_loss)


def test_progress_reports_the_incumbent_and_a_bound():
    table, budget = heads_table(8, 0), 3.0
    seen = []
    best = select_networks(table, budget, progress=seen.append)
    assert seen and seen[-1].done and seen[-1].budget == budget
    assert seen[-1].incumbent == best.total_loss and seen[-1].gap == 0.0
    for status in seen:
        assert status.lower_bound <= best.total_loss + 1e-12 and status.nodes >= 0
        assert status.incumbent is None or status.incumbent >= best.total_loss


def test_limits_node_count_is_deterministic():
    table, budget = heads_table(8, 1), 2.2
    search = PartitionSearch(table.loss_matrix(), table.costs(), budget)
    first = search.solve(budget, Limits(node_limit=3))
    second = search.solve(budget, Limits(node_limit=3))
    assert first == second and first.nodes == 3 and not first.optimal


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "abc"])
def test_bad_time_limit(value):
    table = CandidateTable(("a",), (Candidate("n", 1, {"a": 1}),))
    with pytest.raises(BadInput, match="time limit"):
        select_networks(table, 1, time_limit=value)


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_bad_node_limit(value):
    table = CandidateTable(("a",), (Candidate("n", 1, {"a": 1}),))
    with pytest.raises(BadInput, match="node limit"):
        select_networks(table, 1, node_limit=value)


def test_gap_is_relative_and_zero_when_optimal():
    table = paper_like_table(3, seed=0)
    s = select_networks(table, 2)
    assert s.gap == 0.0 and s.proven_lower_bound == s.total_loss
    partial = dataclasses.replace(s, optimal=False, lower_bound=s.total_loss * 0.9)
    assert partial.gap == pytest.approx(0.1)
    assert partial.to_json()["optimal"] is False and partial.to_json()["lower_bound"] == s.total_loss * 0.9

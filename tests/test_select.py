"""Network selection (Standley et al. Sec. 3.2, Algorithm 1) against its definition.

The branch and bound is checked against brute force over every subset (random
instances, integer losses and costs so that ties are common) and against the MILP.
"""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest

from branchnet.errors import BadInput
from branchnet.selection import (Candidate, CandidateTable, Selection, minimum_budget, select_milp,
                                 select_networks, select_sweep)
from branchnet.selection.branch_bound import BranchAndBound, undominated
from branchnet.selection.solution import fits
from branchnet.selection.synthetic import paper_like_table


# -- the definition, by brute force ------------------------------------------------------
def brute_force(table: CandidateTable, budget: float, max_loss: dict | None = None):
    """The best (loss, cost, count, rows) over all subsets, straight from docs/design.md; None if none fits."""
    losses = table.loss_matrix()
    for task, limit in (max_loss or {}).items():
        column = table.tasks.index(task)
        losses[losses[:, column] > limit, column] = np.inf
    costs = table.costs()
    best = None
    for size in range(1, len(costs) + 1):
        for rows in itertools.combinations(range(len(costs)), size):
            cost = math.fsum(costs[list(rows)])
            if not fits(cost, budget):
                continue
            served = losses[list(rows)].min(axis=0)
            if not np.isfinite(served).all():
                continue
            key = (math.fsum(served), cost, size, rows)
            if best is None or key < best:
                best = key
    return best


def key_of(table: CandidateTable, selection: Selection):
    rows = tuple(sorted(table.names.index(n) for n in selection.networks))
    return (selection.total_loss, selection.cost, len(rows), rows)


def random_table(rng: random.Random, integer: bool) -> CandidateTable:
    n_tasks = rng.randint(1, 5)
    tasks = [f"t{i}" for i in range(n_tasks)]
    candidates = []
    for i in range(rng.randint(1, 9)):
        solved = rng.sample(tasks, rng.randint(1, n_tasks))
        if integer:
            candidates.append(Candidate(f"n{i}", rng.choice([0, 0.5, 1, 1, 1.5, 2]),
                                        {t: rng.randint(0, 4) for t in solved}))
        else:
            candidates.append(Candidate(f"n{i}", rng.uniform(0.1, 2), {t: rng.uniform(0, 1) for t in solved}))
    for t in tasks:
        if not any(t in c.losses for c in candidates):
            candidates.append(Candidate(f"only-{t}", 1, {t: 3}))
    return CandidateTable(tuple(tasks), tuple(candidates))


@pytest.mark.parametrize("integer", [True, False], ids=["integer-ties", "real"])
def test_branch_and_bound_matches_brute_force(integer):
    rng = random.Random(1 if integer else 2)
    solved = 0
    for _ in range(250):
        table = random_table(rng, integer)
        budget = rng.choice([0.5, 1, 1.5, 2, 2.5, 3, 4, 6])
        limits = {table.tasks[0]: rng.choice([0, 1, 2, 3, 0.5])} if rng.random() < 0.25 else None
        expected = brute_force(table, budget, limits)
        if expected is None:
            with pytest.raises(BadInput):
                select_networks(table, budget, limits)
            continue
        got = select_networks(table, budget, limits)
        assert key_of(table, got) == expected, (table, budget, limits)
        solved += 1
    assert solved > 120  # most instances are feasible: the comparison is not vacuous


def test_selection_is_consistent_with_its_networks():
    table = paper_like_table(4, seed=3)
    for budget in (1, 1.5, 2.5, 4):
        s = select_networks(table, budget)
        assert fits(s.cost, budget)
        assert s.cost == math.fsum(table.candidate(n).cost for n in s.networks)
        for task, network in s.assignment.items():
            assert network in s.networks
            assert s.task_losses[task] == min(table.candidate(n).losses.get(task, math.inf) for n in s.networks)
            assert table.candidate(network).losses[task] == s.task_losses[task]
        assert s.total_loss == math.fsum(s.task_losses.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_branch_and_bound_matches_milp_on_paper_sized_instances(seed):
    # 5 tasks, 31 groups + 5 half-width networks: the paper's setting (real-valued losses).
    table = paper_like_table(5, seed=seed)
    assert len(table.candidates) == 36
    for budget in np.arange(1.0, 5.01, 0.5):
        bb, milp = select_networks(table, budget), select_milp(table, budget)
        assert bb.total_loss == pytest.approx(milp.total_loss, abs=1e-9)
        assert bb.total_loss <= milp.total_loss  # the exact search is never worse


def test_branch_and_bound_matches_milp_with_ties():
    # Integer losses and costs: many optimal sets; the MILP's lexicographic solves
    # give the same loss, cost and number of networks.
    rng = random.Random(7)
    tasks = [f"t{i}" for i in range(6)]
    candidates = [Candidate("+".join(g), rng.choice([1, 1, 2]), {t: rng.randint(3, 9) for t in g})
                  for k in range(1, 7) for g in itertools.combinations(tasks, k)]
    candidates += [Candidate(f"{t}@0.5", 0.5, {t: rng.randint(4, 9)}) for t in tasks]
    table = CandidateTable(tuple(tasks), tuple(candidates))
    for budget in np.arange(minimum_budget(table), 6.01, 1.0):
        bb, milp = select_networks(table, budget), select_milp(table, budget)
        assert (bb.total_loss, bb.cost, len(bb.networks)) == (milp.total_loss, milp.cost, len(milp.networks))


def test_all_groups_of_eight_tasks_against_milp():
    # All 255 groups + 8 half-width networks (the benchmark runs 10 tasks).
    table = paper_like_table(8, seed=5)
    assert len(table.candidates) == 263
    for budget in (3, 5.5):
        bb, milp = select_networks(table, budget), select_milp(table, budget)
        assert bb.total_loss == pytest.approx(milp.total_loss, abs=1e-6)
        assert bb.total_loss <= milp.total_loss + 1e-12


# -- tie-breaks (docs/design.md: least loss, then lower cost, then fewer networks, then order) --
def test_tie_break_lower_cost():
    table = CandidateTable(("a", "b"), (
        Candidate("dear", 2, {"a": 1, "b": 1}),
        Candidate("cheap", 1, {"a": 1, "b": 1}),
    ))
    s = select_networks(table, 3)
    assert s.networks == ("cheap",) and s.cost == 1


def test_tie_break_fewer_networks():
    table = CandidateTable(("a", "b"), (
        Candidate("a-only", 1, {"a": 1}),
        Candidate("b-only", 1, {"b": 2}),
        Candidate("both", 2, {"a": 1, "b": 2}),
    ))
    s = select_networks(table, 2)
    assert s.networks == ("both",) and s.total_loss == 3 and s.cost == 2


def test_tie_break_table_order():
    table = CandidateTable(("a",), (
        Candidate("first", 1, {"a": 1}),
        Candidate("second", 1, {"a": 1}),
    ))
    assert select_networks(table, 1).networks == ("first",)
    swapped = CandidateTable(("a",), tuple(reversed(table.candidates)))
    assert select_networks(swapped, 1).networks == ("second",)


def test_tie_break_order_is_on_sorted_rows():
    # Equal loss, cost and count: the set whose sorted rows come first wins ({0, 3} < {1, 2}).
    table = CandidateTable(("a", "b"), (
        Candidate("n0", 1, {"a": 1}),
        Candidate("n1", 1, {"a": 1}),
        Candidate("n2", 1, {"b": 1}),
        Candidate("n3", 1, {"b": 1}),
    ))
    assert select_networks(table, 2).networks == ("n0", "n2")


def test_assignment_tie_goes_to_the_earlier_network():
    table = CandidateTable(("a", "b", "c"), (
        Candidate("x", 1, {"a": 1, "b": 2}),
        Candidate("y", 1, {"b": 2, "c": 1}),
    ))
    s = select_networks(table, 2)
    assert s.assignment == {"a": "x", "b": "x", "c": "y"}


def test_ties_equal_the_brute_force_on_dense_ties():
    rng = random.Random(11)
    for _ in range(60):
        tasks = ("a", "b", "c")
        candidates = tuple(Candidate(f"n{i}", rng.choice([1, 1, 2]), {t: rng.choice([1, 2]) for t in
                                                                      rng.sample(tasks, rng.randint(1, 3))})
                           for i in range(8)) + tuple(Candidate(f"s{t}", 1, {t: 2}) for t in tasks)
        table = CandidateTable(tasks, candidates)
        budget = rng.choice([2, 3, 4])
        assert key_of(table, select_networks(table, budget)) == brute_force(table, budget)


# -- hard limits (the application-specific BETTER) ----------------------------------------
def test_max_loss_changes_the_choice():
    table = CandidateTable(("a", "b"), (
        Candidate("shared", 1, {"a": 3, "b": 1}),
        Candidate("a-alone", 1, {"a": 2}),
        Candidate("b-alone", 1, {"b": 5}),
    ))
    assert select_networks(table, 1).networks == ("shared",)
    s = select_networks(table, 2, {"a": 2.5})
    assert s.networks == ("shared", "a-alone") and s.task_losses["a"] == 2


def test_max_loss_unreachable_names_the_task():
    table = CandidateTable(("a", "b"), (Candidate("ab", 1, {"a": 3, "b": 1}),))
    with pytest.raises(BadInput, match="'a'.*limit 2.*reaches 3"):
        select_networks(table, 5, {"a": 2})


def test_max_loss_over_budget_names_the_task():
    table = CandidateTable(("a", "b"), (
        Candidate("shared", 1, {"a": 3, "b": 1}),
        Candidate("a-alone", 1, {"a": 2}),
    ))
    with pytest.raises(BadInput, match="task 'a' cannot meet its loss limit 2.5 within budget 1.*at least 2"):
        select_networks(table, 1, {"a": 2.5})


def test_max_loss_unknown_task():
    table = CandidateTable(("a",), (Candidate("n", 1, {"a": 1}),))
    with pytest.raises(BadInput, match="unknown task"):
        select_networks(table, 1, {"nope": 1})


# -- budgets -------------------------------------------------------------------------------
def test_minimum_budget_is_the_cheapest_cover():
    rng = random.Random(5)
    for _ in range(80):
        table = random_table(rng, integer=True)
        costs = table.costs()
        solves = np.isfinite(table.loss_matrix())
        expected = min(math.fsum(costs[list(rows)])
                       for size in range(1, len(costs) + 1)
                       for rows in itertools.combinations(range(len(costs)), size)
                       if solves[list(rows)].any(axis=0).all())
        assert minimum_budget(table) == pytest.approx(expected)


def test_budget_below_minimum_says_the_minimum():
    table = CandidateTable(("a", "b"), (Candidate("a", 1, {"a": 1}), Candidate("b", 0.5, {"b": 1})))
    assert minimum_budget(table) == 1.5
    with pytest.raises(BadInput, match="below the minimum 1.5"):
        select_networks(table, 1.4)
    assert select_networks(table, 1.5).cost == 1.5


def test_budget_tolerates_rounding():
    table = CandidateTable(("a", "b"), (Candidate("a", 0.1, {"a": 1}), Candidate("b", 0.2, {"b": 1}),
                                       Candidate("ab", 9, {"a": 0, "b": 0})))
    assert math.fsum([0.1, 0.2]) > 0.3  # in binary
    assert select_networks(table, 0.3).networks == ("a", "b")


@pytest.mark.parametrize("budget", [0, -1, float("nan"), float("inf"), "abc"])
def test_bad_budget(budget):
    table = CandidateTable(("a",), (Candidate("n", 1, {"a": 1}),))
    with pytest.raises(BadInput, match="budget"):
        select_networks(table, budget)


def test_sweep_is_monotone_and_matches_single_solves():
    table = paper_like_table(5, seed=4)
    budgets = [1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5]
    swept = select_sweep(table, budgets)
    assert [s.budget for s in swept] == budgets
    assert all(a.total_loss >= b.total_loss for a, b in zip(swept, swept[1:]))
    assert swept[3] == select_networks(table, 2.5)


def test_sweep_below_minimum_is_bad_input():
    table = CandidateTable(("a",), (Candidate("n", 1, {"a": 1}),))
    with pytest.raises(BadInput, match="minimum 1"):
        select_sweep(table, [0.5, 1])


def test_to_json_has_exactly_the_design_keys():
    table = paper_like_table(3, seed=0)
    data = select_networks(table, 2).to_json()
    assert list(data) == ["budget", "cost", "total_loss", "networks", "assignment", "optimal", "lower_bound", "gap"]
    assert set(data["assignment"]) == set(table.tasks)
    assert data["optimal"] is True and data["gap"] == 0.0 and data["lower_bound"] == data["total_loss"]
    json.dumps(data, allow_nan=False)


# -- pieces of the search -------------------------------------------------------------------
def test_dominated_candidates_are_dropped_only_when_safe():
    losses = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, np.inf], [0.5, np.inf], [1.0, np.inf]])
    costs = np.array([1.0, 1.0, 1.0, 2.0, 1.0])
    # row 1 duplicates row 0 (later: dropped); row 2 is worse than row 0 on its task;
    # row 3 is dearer but better on its task (kept); row 4 ties row 0 on its only task
    # at the same cost but comes later (dropped).
    assert undominated(losses, costs).tolist() == [0, 3]


def test_search_without_partition_bound_is_still_exact(monkeypatch):
    # Above MAX_TASKS the knapsack bound replaces the partition bound; force that path.
    import branchnet.selection.branch_bound as bb_module
    monkeypatch.setattr(bb_module, "MAX_TASKS", 0)
    monkeypatch.setattr(bb_module, "PARTITION_MIN_CANDIDATES", 0)
    assert bb_module.Prepared(np.ones((3, 2)), np.ones(3), 1.0).search is None
    rng = random.Random(3)
    for _ in range(80):
        table = random_table(rng, integer=rng.random() < 0.5)
        budget = rng.choice([1, 2, 3])
        expected = brute_force(table, budget)
        if expected is not None:
            assert key_of(table, select_networks(table, budget)) == expected


def test_search_visits_few_nodes_on_the_paper_setting():
    table = paper_like_table(5, seed=0)
    search = BranchAndBound(table.loss_matrix(), table.costs(), 3.0)
    search.solve()
    assert search.nodes < 300  # 2^36 subsets; the bounds keep it small


def test_partition_search_matches_brute_force(monkeypatch):
    # Small instances normally go to Algorithm 1; force the partition search and compare.
    import branchnet.selection.branch_bound as bb_module
    monkeypatch.setattr(bb_module, "PARTITION_MIN_CANDIDATES", 0)
    rng = random.Random(4)
    checked = 0
    for _ in range(150):
        table = random_table(rng, integer=rng.random() < 0.5)
        budget = rng.choice([1, 1.5, 2, 3, 4])
        limits = {table.tasks[-1]: rng.choice([1, 2, 0.5])} if rng.random() < 0.2 else None
        expected = brute_force(table, budget, limits)
        if expected is not None:
            assert key_of(table, select_networks(table, budget, limits)) == expected
            checked += 1
    assert checked > 80


def _best_completion(losses, costs, chosen, remaining):
    """The least total loss of chosen + any affordable set of other rows (brute force), inf if none covers."""
    m = len(costs)
    cur = losses[chosen].min(axis=0) if chosen else np.full(losses.shape[1], np.inf)
    rest = [r for r in range(m) if r not in chosen]
    best = math.inf
    for size in range(0, len(rest) + 1):
        for added in itertools.combinations(rest, size):
            if math.fsum(costs[list(added)]) <= remaining + 1e-12:
                served = np.minimum(cur, losses[list(added)].min(axis=0)) if added else cur
                if np.isfinite(served).all():
                    best = min(best, math.fsum(served))
    return cur, best


def test_partition_bound_is_a_lower_bound_and_exact_on_the_grid():
    from branchnet.selection.budget_partition import BudgetPartitionBound

    rng = random.Random(9)
    checked = exact = 0
    for _ in range(80):
        integer = rng.random() < 0.5  # costs 0, 0.5, 1, 1.5, 2: on the grid; else real costs
        table = random_table(rng, integer)
        losses, costs = table.loss_matrix(), table.costs()
        bound = BudgetPartitionBound(losses, costs, 3.0, slack=1e-9)
        assert bound.exact == integer or integer is False
        chosen = [r for r in range(len(costs)) if rng.random() < 0.3]
        remaining = rng.choice([0.5, 1, 2, 3])
        cur, best = _best_completion(losses, costs, chosen, remaining)
        if not math.isfinite(best):
            continue
        value = bound.bound(cur, remaining)
        assert value <= best + 1e-9
        if bound.exact:  # with grid costs the relaxation is exact
            assert value == pytest.approx(best, abs=1e-9)
            exact += 1
        checked += 1
    assert checked > 30 and exact > 10


def test_partition_solution_is_optimal_on_the_grid():
    from branchnet.selection.budget_partition import BudgetPartitionBound

    table = paper_like_table(6, seed=2)  # costs 1 and 0.5
    losses, costs = table.loss_matrix(), table.costs()
    bound = BudgetPartitionBound(losses, costs, 6.0)
    assert bound.exact and bound.q == 0.5
    for budget in (1, 2.5, 4):
        rows = bound.solution(budget)
        assert math.fsum(costs[rows]) <= budget
        assert math.fsum(losses[rows].min(axis=0)) == pytest.approx(select_networks(table, budget).total_loss,
                                                                    abs=1e-12)


def test_grid_step():
    from branchnet.selection.budget_partition import grid_step

    assert grid_step(np.array([1.0, 0.5, 1.5]), 5.0) == (0.5, True)
    assert grid_step(np.array([1.0, 0.75, 4.0]), 3.0) == (0.25, True)  # 4 never fits budget 3
    q, exact = grid_step(np.array([1.03, 0.26]), 3.0, levels=48)
    assert not exact and 3.0 / 48 <= q <= 3.0 / 24


@pytest.mark.parametrize("off_grid", [False, True], ids=["grid-costs", "off-grid-costs"])
def test_many_random_networks_against_milp(off_grid):
    # Repeated groups at three widths (the partition bound's grid is 0.25); off the grid
    # each network also pays for its heads, so costs are rounded and the bound is inexact.
    from branchnet.selection.synthetic import many_networks_table

    table = many_networks_table(6, 100, seed=4)
    if off_grid:
        table = CandidateTable(table.tasks, tuple(Candidate(c.name, c.cost * (1 + 0.013 * (len(c.losses) - 1)),
                                                            c.losses) for c in table.candidates))
    for budget in (1.5, 2.75):
        bb, milp = select_networks(table, budget), select_milp(table, budget)
        assert bb.total_loss == pytest.approx(milp.total_loss, abs=1e-9)
        assert bb.total_loss <= milp.total_loss + 1e-12

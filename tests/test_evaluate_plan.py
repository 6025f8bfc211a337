"""The study's data model (branchnet.study.jobs): tree ids, nested uniform draws, roles and jobs.

No training: synthetic affinities and costs for four tasks.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import scipy.stats

from branchnet.affinity import AffinityData
from branchnet.errors import BadInput
from branchnet.study.jobs import (Costs, Job, Scorer, draw_ranks, plan_study, sweep_budgets, tree_id)
from branchnet.tree.group_cost import GroupCost
from branchnet.tree.sampling import TreeSpace, budget_window

TASKS = ["a", "b", "c", "d"]
LOCATIONS = ["l1", "l2", "l3", "l4"]
COSTS = Costs(np.array([100.0, 110.0, 130.0, 170.0]), np.array([5.0, 5.0, 5.0, 5.0]))


def _affinity(seed: int) -> AffinityData:
    rng = np.random.default_rng(seed)
    a = np.empty((4, 4, 4))
    for d in range(4):
        m = rng.uniform(-0.2, 1.0, (4, 4))
        m = (m + m.T) / 2
        np.fill_diagonal(m, 1.0)
        a[d] = m
    return AffinityData(a, TASKS, LOCATIONS)


def test_tree_ids_name_the_partitions():
    assert tree_id([[TASKS]] * 4, TASKS) == "shared"
    assert tree_id([[[t] for t in TASKS]] * 4, TASKS) == "separate"
    one = [[["a", "b", "c", "d"]], [["a", "b"], ["c", "d"]], [["a", "b"], ["c", "d"]], [["a"], ["b"], ["c", "d"]]]
    shuffled = [[["d", "c", "b", "a"]], [["d", "c"], ["b", "a"]], [["c", "d"], ["a", "b"]], [["d", "c"], ["b"], ["a"]]]
    assert tree_id(one, TASKS) == tree_id(shuffled, TASKS)
    assert tree_id(one, TASKS).startswith("t1-2-2-3-")
    other = [[["a", "b", "c", "d"]], [["a", "c"], ["b", "d"]], [["a", "c"], ["b", "d"]], [["a"], ["c"], ["b", "d"]]]
    assert tree_id(other, TASKS) != tree_id(one, TASKS)


def test_draws_are_uniform_subsets_and_nested():
    for key in ("x", "y", "z"):
        assert draw_ranks(50, 12, key)[:5] == draw_ranks(50, 5, key)
        assert len(set(draw_ranks(50, 12, key))) == 12
    assert draw_ranks(4, 9, "k") == [0, 1, 2, 3]
    counts = Counter(frozenset(draw_ranks(6, 2, f"seed{i}")) for i in range(6000))
    assert set(counts) == {frozenset(p) for p in itertools.combinations(range(6), 2)}
    assert scipy.stats.chisquare(list(counts.values())).pvalue > 1e-3


def test_plan_holds_the_measure_trees_random_trees_and_the_ends():
    from branchnet.tree.search import search_tree

    scorers = [Scorer("rsa", GroupCost("max"), _affinity(0)), Scorer("fafs", GroupCost("max"), _affinity(1))]
    low, high = 510 + 20, 510 * 4 + 20
    budgets = sweep_budgets(low, high, 3)
    assert budgets == [round(low + (high - low) * i / 4) for i in (1, 2, 3)]
    plan = plan_study(TASKS, LOCATIONS, COSTS, scorers, budgets, seeds=2, random_count=3, sample_seed=7)
    assert [r.source for r in plan.roles[:2]] == ["shared", "separate"]
    for budget in budgets:
        for scorer in scorers:
            (role,) = [r for r in plan.roles if r.source == scorer.name and r.budget == budget]
            built = search_tree(scorer.affinity, budget, **COSTS.search_costs())
            assert plan.trees[role.tree_id].partitions == built.partitions
        randoms = [r for r in plan.roles if r.source == "random" and r.budget == budget]
        assert len(randoms) == min(3, plan.window_sizes[budget])
        lo, hi = budget_window(budget)
        for r in randoms:
            assert lo <= plan.trees[r.tree_id].params <= hi and r.tree_id not in ("shared", "separate")
    assert plan.jobs() == [Job(t, s) for s in (0, 1) for t in plan.trees]
    more = plan_study(TASKS, LOCATIONS, COSTS, scorers, budgets, seeds=2, random_count=5, sample_seed=7)
    for budget in budgets:
        few = [r.tree_id for r in plan.roles if r.source == "random" and r.budget == budget]
        many = [r.tree_id for r in more.roles if r.source == "random" and r.budget == budget]
        assert many[: len(few)] == few  # asking for more random trees keeps the first ones
    with pytest.raises(BadInput, match="outside"):
        plan_study(TASKS, LOCATIONS, COSTS, scorers, [high + 1], seeds=1)
    exhaustive = plan_study(TASKS, LOCATIONS, COSTS, scorers, budgets[:1], 1, None, exhaustive=True,
                            branch_stages=3)
    listed = [r for r in exhaustive.roles if r.source == "exhaustive"]
    space = TreeSpace(TASKS, COSTS.stage_params, COSTS.head_params, None, 3)
    assert len(listed) == space.size - 1  # all-shared has its own role; all-separate branches at stage 0
    assert all(exhaustive.trees[r.tree_id].partitions[0] == [TASKS] for r in listed)

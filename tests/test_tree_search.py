"""Tree search: the exact search against brute-force enumeration, the sweep, ties, budgets.

Brute force enumerates every chain of nested partitions (small N only) and scores each
with the definition in branchnet.tree (independent of the search code).
"""

import itertools

import numpy as np
import pytest

from branchnet.affinity import AffinityData
from branchnet.errors import BadInput
from branchnet.tree.search import pareto_sweep, search_tree
from branchnet.tree import check_partitions, tree_dissimilarity, tree_flops, tree_params

TOL = 1e-9


def set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for p in set_partitions(rest):
        yield [[first]] + p
        for i in range(len(p)):
            yield p[:i] + [[first] + p[i]] + p[i + 1:]


def nested_chains(tasks, depth):
    def refinements(partition):
        for combo in itertools.product(*[list(set_partitions(g)) for g in partition]):
            yield [g for part in combo for g in part]

    def rec(prev, d):
        if d == depth:
            yield []
            return
        for p in (set_partitions(list(tasks)) if prev is None else refinements(prev)):
            for tail in rec(p, d + 1):
                yield [p] + tail

    yield from rec(None, 0)


def brute_force(aff: AffinityData):
    """Every tree as (dissimilarity, params, flops, partitions), scored by the definition:
    sum over stages of the mean over groups of the largest 1 - A[d, i, j] in a group."""
    index = {t: i for i, t in enumerate(aff.tasks)}
    diameters = {}

    def diameter(d, group):
        key = (d, tuple(group))
        if key not in diameters:
            diameters[key] = max((1 - aff.affinity[d, index[a], index[b]]
                                  for a, b in itertools.combinations(group, 2)), default=0.0)
        return diameters[key]

    out = []
    for chain in nested_chains(aff.tasks, aff.num_locations):
        counts = np.array([len(p) for p in chain])
        flops = None
        if aff.stage_flops is not None:
            flops = float(counts @ aff.stage_flops + aff.head_flops.sum())
        diss = sum(sum(diameter(d, g) for g in p) / len(p) for d, p in enumerate(chain))
        out.append((diss, int(counts @ aff.stage_params + aff.head_params.sum()), flops, chain))
    return out


def best_of(trees, params_budget, flops_budget=None):
    """Least dissimilarity within the budget; ties (within TOL) to fewer params, then fewer FLOPs."""
    fit = [t for t in trees if t[1] <= params_budget and (flops_budget is None or t[2] <= flops_budget)]
    least = min(t[0] for t in fit)
    tied = [t for t in fit if t[0] <= least + TOL]
    return min(tied, key=lambda t: (t[1], t[2] or 0))


def random_instance(rng, n, depth, flops=True):
    a = rng.uniform(-1, 1, size=(depth, n, n))
    a = (a + a.transpose(0, 2, 1)) / 2
    for d in range(depth):
        np.fill_diagonal(a[d], 1.0)
    tasks = [f"t{i}" for i in range(n)]
    return AffinityData(
        affinity=a, tasks=tasks, locations=[f"l{d}" for d in range(depth)],
        stage_params=rng.integers(1, 100, size=depth), head_params=rng.integers(0, 10, size=n),
        stage_flops=rng.integers(1, 100, size=depth).astype(float) if flops else None,
        head_flops=rng.integers(0, 10, size=n).astype(float) if flops else None).validate()


def check_tree(tree, aff):
    """The tree's recorded numbers are those of its partitions (definition in branchnet.tree)."""
    assert check_partitions(tree.partitions, aff.tasks) == tree.partitions
    assert tree.params == tree_params(tree.partitions, aff.tasks, aff.stage_params, aff.head_params)
    assert tree.dissimilarity == pytest.approx(tree_dissimilarity(tree.partitions, aff.tasks, aff.affinity),
                                               abs=1e-12)
    if aff.stage_flops is not None:
        assert tree.flops == pytest.approx(tree_flops(tree.partitions, aff.tasks, aff.stage_flops, aff.head_flops))


def budgets(rng, trees, count):
    """Random budgets between the all-shared and the all-separate network (and the two ends)."""
    lo = min(t[1] for t in trees)
    hi = max(t[1] for t in trees)
    return [lo, hi] + [float(rng.uniform(lo, hi)) for _ in range(count)]


@pytest.mark.parametrize("seed", range(12))
def test_exact_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    depth = int(rng.integers(1, 5))
    aff = random_instance(rng, n, depth, flops=bool(seed % 2))
    trees = brute_force(aff)
    for budget in budgets(rng, trees, 4):
        want = best_of(trees, budget)
        got = search_tree(aff, budget, method="exact")
        check_tree(got, aff)
        assert got.method == "exact"
        assert got.dissimilarity == pytest.approx(want[0], abs=TOL)
        assert got.params == want[1]
        assert got.params <= budget


@pytest.mark.parametrize("seed", range(6))
def test_exact_matches_brute_force_with_flops_budget(seed):
    rng = np.random.default_rng(100 + seed)
    n, depth = int(rng.integers(3, 6)), int(rng.integers(2, 5))
    aff = random_instance(rng, n, depth)
    trees = brute_force(aff)
    lo_f, hi_f = min(t[2] for t in trees), max(t[2] for t in trees)
    for budget in budgets(rng, trees, 2):
        flops_budget = float(rng.uniform(lo_f, hi_f))
        want = best_of(trees, budget, flops_budget)
        got = search_tree(aff, budget, flops_budget, method="exact")
        check_tree(got, aff)
        assert got.dissimilarity == pytest.approx(want[0], abs=TOL)
        assert (got.params, got.flops) == (want[1], want[2])
        assert got.flops <= flops_budget


@pytest.mark.parametrize("seed, depth", [(0, 3), (1, 4)])
def test_exact_matches_brute_force_six_tasks(seed, depth):
    rng = np.random.default_rng(200 + seed)
    aff = random_instance(rng, 6, depth, flops=False)
    trees = brute_force(aff)
    for budget in budgets(rng, trees, 3):
        want = best_of(trees, budget)
        got = search_tree(aff, budget, method="exact")
        assert got.dissimilarity == pytest.approx(want[0], abs=TOL)
        assert got.params == want[1]


@pytest.mark.parametrize("seed", range(4))
def test_sweep_is_the_brute_force_path(seed):
    rng = np.random.default_rng(300 + seed)
    aff = random_instance(rng, int(rng.integers(2, 6)), int(rng.integers(1, 5)), flops=False)
    trees = brute_force(aff)
    path = pareto_sweep(aff, method="exact")
    # the path is increasing in params and strictly decreasing in dissimilarity
    assert all(a.params < b.params and a.dissimilarity > b.dissimilarity + TOL for a, b in zip(path, path[1:]))
    assert path[0].params == min(t[1] for t in trees)
    assert path[-1].dissimilarity == pytest.approx(0.0)
    # each step is the optimum for budgets from its params up to the next step's
    for i, tree in enumerate(path):
        check_tree(tree, aff)
        want = best_of(trees, tree.params)
        assert (tree.params, tree.dissimilarity) == (want[1], pytest.approx(want[0], abs=TOL))
        if i + 1 < len(path):
            want = best_of(trees, path[i + 1].params - 0.5)
            assert want[1] == tree.params
    # and every distinct optimum over all budgets is on the path
    optima = {best_of(trees, b)[1] for b in sorted({t[1] for t in trees})}
    assert optima == {t.params for t in path}


def test_ties_go_to_fewer_params():
    # identical tasks: every tree has dissimilarity 0, so the all-shared tree wins at any budget
    n, depth = 4, 3
    aff = AffinityData(np.ones((depth, n, n)), [f"t{i}" for i in range(n)], ["a", "b", "c"],
                       stage_params=np.array([5, 6, 7]), head_params=np.ones(n, dtype=int)).validate()
    for method in ("exact", "scalable"):
        tree = search_tree(aff, 1e9, method=method)
        assert tree.group_counts == [1, 1, 1] and tree.dissimilarity == 0.0


def test_ties_with_equal_dissimilarity_prefer_cheaper_stage():
    # two tasks, equally dissimilar at both stages: splitting at the cheap stage 1 or the
    # expensive stage 0 ... only splitting deeper is possible (nesting), so compare k=(1,2) vs (2,2):
    # both give dissimilarity d0/1*0 ... construct A so that (1,2) and (2,2) tie exactly.
    a = np.array([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 0.2], [0.2, 1.0]]])
    aff = AffinityData(a, ["x", "y"], ["s0", "s1"], stage_params=np.array([10, 10]),
                       head_params=np.array([0, 0])).validate()
    tree = search_tree(aff, 40, method="exact")  # (1,2) costs 30, (2,2) costs 40: both dissimilarity 0
    assert tree.group_counts == [1, 2] and tree.params == 30 and tree.dissimilarity == 0.0


def test_budget_below_all_shared_names_the_minimum():
    aff = random_instance(np.random.default_rng(7), 4, 3)
    minimum = int(aff.stage_params.sum() + aff.head_params.sum())
    with pytest.raises(BadInput) as err:
        search_tree(aff, minimum - 1)
    assert str(minimum) in str(err.value) and "all-shared" in str(err.value)
    assert search_tree(aff, minimum).group_counts == [1, 1, 1]


def test_budget_above_all_separate_gives_it_with_a_note():
    aff = random_instance(np.random.default_rng(8), 4, 3)
    tree = search_tree(aff, 1e12)
    assert tree.group_counts == [4, 4, 4] and tree.dissimilarity == 0.0
    assert tree.notes and "all-separate" in tree.notes[0]
    assert not search_tree(aff, float(aff.stage_params.sum() + aff.head_params.sum())).notes


def test_flops_budget_needs_flops():
    aff = random_instance(np.random.default_rng(9), 3, 2, flops=False)
    with pytest.raises(BadInput, match="FLOPs"):
        search_tree(aff, 1e9, 1e9)


def test_costs_from_arguments_override_and_are_required():
    rng = np.random.default_rng(10)
    aff = random_instance(rng, 3, 2)
    bare = AffinityData(aff.affinity, aff.tasks, aff.locations).validate()
    with pytest.raises(BadInput, match="--stage-params"):
        search_tree(bare, 100)
    tree = search_tree(bare, 1000, stage_params=[100, 200], head_params=[1, 2, 3])
    assert tree.params == tree_params(tree.partitions, aff.tasks, [100, 200], [1, 2, 3])
    with pytest.raises(BadInput, match="head-params has 2 values"):
        search_tree(bare, 1000, stage_params=[100, 200], head_params=[1, 2])


def test_method_choice():
    aff = random_instance(np.random.default_rng(11), 4, 2)
    assert search_tree(aff, 1e9, method="auto").method == "exact"
    assert search_tree(aff, 1e9, method="scalable").method == "scalable"
    with pytest.raises(BadInput, match="unknown search method"):
        search_tree(aff, 1e9, method="fast")


def test_one_task_and_one_stage():
    aff = AffinityData(np.ones((1, 1, 1)), ["only"], ["s"], stage_params=np.array([3]),
                       head_params=np.array([1])).validate()
    tree = search_tree(aff, 4)
    assert tree.partitions == [[["only"]]] and tree.params == 4 and tree.dissimilarity == 0.0

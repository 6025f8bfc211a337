"""Tree populations: exhaustive listing against brute force, uniform random trees of a window.

Brute force here: every sequence of D set partitions of the tasks, kept when each refines
the one before (independent of branchnet.tree.chains).
"""

import itertools
import json
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from branchnet.affinity import AffinityData, load_affinity, save_affinity
from branchnet.errors import BadInput
from branchnet.tree import check_partitions, tree_dissimilarity, tree_params
from branchnet.tree.chains import count_chains, stirling2, unrank_chain
from branchnet.tree.sampling import (EXHAUSTIVE_LIMIT, TreeSpace, all_trees, budget_window, count_trees,
                                     random_trees)
from conftest import assert_one_line_error


def set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for p in set_partitions(rest):
        yield [[first]] + p
        for i in range(len(p)):
            yield p[:i] + [[first] + p[i]] + p[i + 1:]


def key(chain):
    return tuple(tuple(sorted(tuple(sorted(g)) for g in p)) for p in chain)


def brute_force(tasks, depth):
    every = list(set_partitions(list(tasks)))
    out = []
    for chain in itertools.product(every, repeat=depth):
        if all(all(any(set(g) <= set(c) for c in chain[d - 1]) for g in chain[d]) for d in range(1, depth)):
            out.append(chain)
    return out


def affinity(n, depth, stage=None, head=None, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, size=(depth, n, n))
    a = (a + a.transpose(0, 2, 1)) / 2
    for d in range(depth):
        np.fill_diagonal(a[d], 1.0)
    stage = np.array(stage if stage is not None else [10 * (d + 1) for d in range(depth)])
    head = np.array(head if head is not None else [1] * n)
    return AffinityData(a, [f"t{i}" for i in range(n)], [f"l{d}" for d in range(depth)],
                        stage_params=stage, head_params=head).validate()


def params_of(chain, aff):
    return int(np.array([len(p) for p in chain]) @ aff.stage_params + aff.head_params.sum())


@pytest.mark.parametrize("n,depth", [(1, 3), (2, 4), (3, 1), (3, 4), (4, 2), (4, 3), (4, 4)])
def test_exhaustive_is_brute_force(n, depth):
    aff = affinity(n, depth)
    want = brute_force(aff.tasks, depth)
    assert count_trees(aff) == len(want)
    got = all_trees(aff)
    assert got.total == len(want) and got.took_all
    assert sorted(map(key, (t.partitions for t in got.trees))) == sorted(map(key, want))
    assert [t.params for t in got.trees] == sorted(t.params for t in got.trees)
    for tree in got.trees[:50]:
        assert check_partitions(tree.partitions, aff.tasks) == tree.partitions
        assert tree.dissimilarity == tree_dissimilarity(tree.partitions, aff.tasks, aff.affinity)
        assert tree.method == "exhaustive"
    # only the trees that branch in the last L stages; and only a window's
    for stages in range(1, depth + 1):
        shared = depth - stages
        expect = [c for c in want if all(len(c[d]) == 1 for d in range(shared))]
        assert count_trees(aff, branch_stages=stages) == len(expect)
    budget = float(np.median([params_of(c, aff) for c in want]))
    lo, hi = budget_window(budget)
    inside = [c for c in want if lo <= params_of(c, aff) <= hi]
    got = all_trees(aff, budget)
    assert sorted(map(key, (t.partitions for t in got.trees))) == sorted(map(key, inside))


def test_counts_and_unranking():
    assert [stirling2(5, k) for k in range(7)] == [0, 1, 15, 25, 10, 1, 0]
    assert count_chains(4, [1, 2, 4]) == stirling2(4, 4) * stirling2(4, 2) * stirling2(2, 1)
    assert count_chains(4, [2, 1]) == 0
    seen = set()
    for rank in range(count_chains(5, [2, 3, 4])):
        labels = unrank_chain(5, [2, 3, 4], rank)
        assert [len(set(row)) for row in labels] == [2, 3, 4]
        for d in range(1, 3):  # nested
            assert all(len(set(labels[d - 1][labels[d] == g])) == 1 for g in set(labels[d]))
        seen.add(labels.tobytes())
    assert len(seen) == count_chains(5, [2, 3, 4])


def test_random_trees_are_uniform_chi_square():
    aff = affinity(4, 3, stage=[3, 5, 7], head=[0, 0, 0, 0])
    space = TreeSpace(aff.tasks, aff.stage_params, aff.head_params, budget_window(40.0), include_ends=False)
    assert 20 < space.size < 100
    draws = Counter(key(p) for p in space.draw(space.size * 80, seed=1))
    assert len(draws) == space.size
    assert chisquare(list(draws.values())).pvalue > 1e-3
    # ... also over the group-count vectors, which are far from equally likely
    vectors = Counter(tuple(len(p) for p in chain) for chain in space.draw(4000, seed=2))
    expected = {tuple(k): c for k, c in zip(space.vectors.tolist(), space.counts)}
    observed = [vectors.get(k, 0) for k in expected]
    assert chisquare(observed, np.array(list(expected.values())) * 4000 / space.size).pvalue > 1e-3
    # a sample without replacement includes every tree equally often over seeds
    inclusion = Counter(key(p) for s in range(600) for p in space.sample(3, seed=s))
    assert chisquare([inclusion.get(key(p), 0) for p in space.all()]).pvalue > 1e-3


def test_random_trees_in_the_window_deterministic_and_never_an_end():
    aff = affinity(5, 4, stage=[2, 5, 11, 23], head=[1, 2, 3, 4, 5])
    budget = 120.0
    lo, hi = budget_window(budget)
    first = random_trees(aff, budget, 12, seed=7)
    assert len(first.trees) == 12 and not first.took_all and first.total > 12
    assert [t.to_json() for t in first.trees] == [t.to_json() for t in random_trees(aff, budget, 12, seed=7).trees]
    assert [t.partitions for t in first.trees] != [t.partitions for t in random_trees(aff, budget, 12, seed=8).trees]
    assert len({key(t.partitions) for t in first.trees}) == 12
    for tree in first.trees:
        assert lo <= tree.params <= hi
        assert tree.params == tree_params(tree.partitions, aff.tasks, aff.stage_params, aff.head_params)
        assert set(tree.group_counts) not in ({1}, {5})
        assert tree.method == "random" and tree.budget == {"params": 120, "flops": None}
    # a window holding fewer trees than asked: all of them, sorted by params
    small = random_trees(aff, budget, 10**6, seed=0)
    assert small.took_all and len(small.trees) == small.total
    assert [t.params for t in small.trees] == sorted(t.params for t in small.trees)


def test_random_trees_of_many_tasks():
    n = 40
    aff = affinity(n, 4, stage=[100, 400, 1600, 6400], head=[5] * n)
    shared, separate = 8500 + 5 * n, n * 8500 + 5 * n
    budget = (shared + separate) / 2
    got = random_trees(aff, budget, 6, seed=3)
    assert got.total > 10**40 and len(got.trees) == 6
    for tree in got.trees:
        assert 0.9 * budget <= tree.params <= budget
        assert check_partitions(tree.partitions, aff.tasks) == tree.partitions


def test_bad_windows_and_counts():
    aff = affinity(3, 2, stage=[10, 1000], head=[0, 0, 0])
    with pytest.raises(BadInput, match="holds no tree"):
        random_trees(aff, 2500.0, 4)  # between 2 and 3 copies of the deep stage: no count vector fits
    with pytest.raises(BadInput, match="at least one"):
        random_trees(aff, 3030.0, 0)
    big = affinity(7, 4)
    with pytest.raises(BadInput, match="--branch-stages"):
        all_trees(big)
    assert count_trees(big) > EXHAUSTIVE_LIMIT
    assert len(all_trees(big, branch_stages=1).trees) == count_trees(big, branch_stages=1) == 877
    with pytest.raises(BadInput, match="1..4"):
        count_trees(big, branch_stages=5)


@pytest.fixture
def aff_file(tmp_path):
    path = tmp_path / "affinity.npz"
    save_affinity(path, affinity(4, 4, stage=[2, 5, 11, 23], head=[1, 1, 1, 1]))
    return path


def test_build_random_and_exhaustive_cli(cli, aff_file, tmp_path):
    result = cli("build", "--affinity", aff_file, "--params", "120", "--random", "5", "--seed", "3", "--json")
    assert result.code == 0, result.err
    trees = json.loads(result.out)
    assert len(trees) == 5 and all(108 <= t["params"] <= 120 for t in trees)
    assert trees == json.loads(cli("build", "--affinity", aff_file, "--params", "120", "--random", "5",
                                   "--seed", "3", "--json").out)
    assert not (aff_file.parent / "tree.json").exists()
    result = cli("build", "--affinity", aff_file, "--params", "120", "--random", "100000", "--json")
    assert result.code == 0 and "holds only" in result.err
    assert len(json.loads(result.out)) < 100000
    result = cli("build", "--affinity", aff_file, "--exhaustive", "--branch-stages", "3", "--json")
    assert result.code == 0, result.err
    assert len(json.loads(result.out)) == 154  # stage 0 shared: the chains of the last three stages
    out = tmp_path / "all.json"
    result = cli("build", "--affinity", aff_file, "--exhaustive", "--params", "80", "--out", out)
    assert result.code == 0, result.err
    listed = json.loads(out.read_text())
    assert len(listed) == count_trees(load_affinity(aff_file), 80.0) and f"{len(listed)} trees of" in result.out
    assert all(72 <= t["params"] <= 80 for t in listed)
    assert_one_line_error(cli("build", "--affinity", aff_file, "--params", "120", "--random", "0"), "--random")
    assert_one_line_error(cli("build", "--affinity", aff_file, "--params", "50", "--random", "3"), "holds no tree")
    assert_one_line_error(cli("build", "--affinity", aff_file, "--random", "3"), "--params")
    assert_one_line_error(cli("build", "--affinity", aff_file, "--random", "3", "--exhaustive", "--params", "99"),
                          "one of")


def test_a_sweeps_empty_window_moves_to_the_nearest_tree_size():
    """budgets_with_trees keeps a budget whose window holds a tree and moves the others to the
    smallest tree size above (brute force over every count vector)."""
    import itertools

    from branchnet.tree.sampling import TreeSpace, budgets_with_trees

    tasks = [f"t{i}" for i in range(6)]
    stage, heads = [26848, 33088, 131712, 525568], [1290, 1290, 37291, 129, 129, 129]
    sizes = sorted({int(np.dot(k, stage) + sum(heads)) for k in
                    itertools.combinations_with_replacement(range(1, 7), 4)})[1:-1]  # ends excluded
    low, high = sizes[0] - 1, sizes[-1] + 1
    budgets = [int(low + (high - low) * i / 9) for i in range(1, 9)]
    got, notes = budgets_with_trees(tasks, stage, heads, budgets)
    expected = []
    for b in budgets:
        if any(0.9 * b <= p <= b for p in sizes):
            expected.append(b)
        else:
            expected.append(min(p for p in sizes if p > b))
    assert got == sorted(set(expected))
    assert len(notes) == sum(1 for b in budgets if b not in expected)
    for b in got:
        assert TreeSpace(tasks, stage, heads, (0.9 * b, b), include_ends=False).size > 0

"""The cost alternatives (``build --cost max|mean|weighted|sensitivity``) against brute force.

Brute force enumerates every chain of nested partitions (N <= 5) and scores each with the
definitions of docs/tree.md ("Cost functions"), written out here independently of
branchnet.tree.group_cost.
"""

import itertools
import json

import numpy as np
import pytest

from branchnet.affinity import AffinityData, save_affinity
from branchnet.errors import BadInput
from branchnet.tree import make_tree, tree_dissimilarity
from branchnet.tree.group_cost import GroupCost, sensitivity_cost, sensitivity_weights, shared_per_task_delta
from branchnet.tree.search import pareto_sweep, search_tree
from branchnet.tree.search.subsets import subset_costs
from conftest import assert_one_line_error

TOL = 1e-9


def partitions_of(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for p in partitions_of(rest):
        yield [[first]] + p
        for i in range(len(p)):
            yield p[:i] + [[first] + p[i]] + p[i + 1:]


def chains(tasks, depth):
    """Every sequence of `depth` set partitions in which each refines the one before."""
    every = list(partitions_of(list(tasks)))

    def refines(fine, coarse):
        return all(any(set(g) <= set(c) for c in coarse) for g in fine)

    def rec(prev, d):
        if d == depth:
            yield []
            return
        for p in every:
            if prev is None or refines(p, prev):
                for tail in rec(p, d + 1):
                    yield [p] + tail

    yield from rec(None, 0)


def direct(chain, aff, cost, weights=None):
    """The cost of a chain straight from the definitions."""
    index = {t: i for i, t in enumerate(aff.tasks)}
    n = len(aff.tasks)
    total = 0.0
    for d, partition in enumerate(chain):
        level = 0.0
        for group in partition:
            pairs = []
            for a, b in itertools.combinations(group, 2):
                i, j = index[a], index[b]
                w = 1.0 if weights is None else (weights[i] + weights[j]) / 2
                pairs.append(w * (1.0 - aff.affinity[d, i, j]))
            if not pairs:
                continue
            if cost in ("max", "sensitivity"):
                level += max(pairs)
            elif cost == "mean":
                level += sum(pairs) / len(pairs)
            elif cost == "weighted":
                level += len(group) * max(pairs)
        total += level / (n if cost == "weighted" else len(partition))
    return total


def instance(seed, n, depth):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, size=(depth, n, n))
    a = (a + a.transpose(0, 2, 1)) / 2
    for d in range(depth):
        np.fill_diagonal(a[d], 1.0)
    return AffinityData(a, [f"t{i}" for i in range(n)], [f"l{d}" for d in range(depth)],
                        stage_params=rng.integers(1, 100, size=depth),
                        head_params=rng.integers(0, 10, size=n)).validate(), rng


def cost_for(name, aff, rng):
    if name != "sensitivity":
        return name, None
    delta = {t: float(v) for t, v in zip(aff.tasks, rng.uniform(-20, 5, size=len(aff.tasks)))}
    return sensitivity_cost(delta, aff.tasks), sensitivity_weights(delta, aff.tasks)


@pytest.mark.parametrize("name", ["max", "mean", "weighted", "sensitivity"])
@pytest.mark.parametrize("seed", range(3))
def test_search_matches_brute_force(name, seed):
    n, depth = [(4, 3), (5, 2), (3, 4)][seed]
    aff, rng = instance(seed + 10 * len(name), n, depth)
    cost, weights = cost_for(name, aff, rng)
    scored = []
    for chain in chains(aff.tasks, depth):
        counts = np.array([len(p) for p in chain])
        scored.append((direct(chain, aff, name, weights), float(counts @ aff.stage_params + aff.head_params.sum())))
    lo, hi = min(s[1] for s in scored), max(s[1] for s in scored)
    for budget in [lo, hi] + list(rng.uniform(lo, hi, size=3)):
        fit = [s for s in scored if s[1] <= budget]
        least = min(s[0] for s in fit)
        want_params = min(s[1] for s in fit if s[0] <= least + TOL)
        got = search_tree(aff, float(budget), cost=cost)
        assert got.method == "exact"
        assert got.dissimilarity == pytest.approx(least, abs=1e-9)
        assert got.params == want_params
        assert got.dissimilarity == pytest.approx(direct(got.partitions, aff, name, weights), abs=1e-12)
        assert tree_dissimilarity(got.partitions, aff.tasks, aff.affinity, cost) == pytest.approx(
            direct(got.partitions, aff, name, weights), abs=1e-12)
        if name != "max":
            assert got.to_json()["cost"]["name"] == name
        else:
            assert "cost" not in got.to_json()


@pytest.mark.parametrize("name", ["mean", "weighted"])
def test_sweep_under_another_cost_is_the_brute_force_path(name):
    aff, rng = instance(7, 4, 3)
    best: dict[float, float] = {}
    for chain in chains(aff.tasks, 3):
        params = float(np.array([len(p) for p in chain]) @ aff.stage_params + aff.head_params.sum())
        best[params] = min(best.get(params, np.inf), direct(chain, aff, name))
    path, running = [], np.inf
    for params in sorted(best):
        if best[params] < running - TOL:
            running = best[params]
            path.append((params, running))
    got = pareto_sweep(aff, cost=name)
    assert [(t.params, pytest.approx(t.dissimilarity, abs=1e-9)) for t in got] == path


def test_the_scalable_search_takes_the_sensitivity_cost_and_refuses_the_others():
    aff, rng = instance(3, 3, 2)
    cost, weights = cost_for("sensitivity", aff, rng)
    budget = float(aff.stage_params.sum() * 2 + aff.head_params.sum())
    exact = search_tree(aff, budget, method="exact", cost=cost)
    scalable = search_tree(aff, budget, method="scalable", cost=cost)
    assert scalable.dissimilarity == pytest.approx(direct(scalable.partitions, aff, "sensitivity", weights))
    assert scalable.dissimilarity == pytest.approx(exact.dissimilarity, abs=TOL)  # three tasks: it finds the best
    with pytest.raises(BadInput, match="exactly only"):
        search_tree(aff, budget, method="scalable", cost="mean")
    with pytest.raises(BadInput, match="metrics.json"):
        search_tree(aff, budget, cost="sensitivity")
    with pytest.raises(BadInput, match="unknown cost"):
        search_tree(aff, budget, cost="median")


def test_max_cost_is_the_default_bit_for_bit():
    aff, _ = instance(5, 5, 4)
    for budget in (300.0, 500.0):
        plain = search_tree(aff, budget)
        named = search_tree(aff, budget, cost="max")
        assert plain.to_json() == named.to_json()
        assert plain.dissimilarity == tree_dissimilarity(plain.partitions, aff.tasks, aff.affinity)


def test_subset_costs_are_the_group_terms():
    rng = np.random.default_rng(0)
    dist = rng.uniform(0, 2, size=(6, 6))
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0)
    tables = {form: subset_costs(dist, form) for form in ("max", "mean", "weighted")}
    for mask in range(1 << 6):
        members = [i for i in range(6) if mask >> i & 1]
        pairs = [dist[i, j] for i, j in itertools.combinations(members, 2)]
        assert tables["max"][mask] == (max(pairs) if pairs else 0.0)
        assert tables["mean"][mask] == pytest.approx(np.mean(pairs) if pairs else 0.0, abs=1e-12)
        assert tables["weighted"][mask] == pytest.approx(len(members) * max(pairs) if pairs else 0.0)


def test_sensitivity_weights():
    tasks = ["a", "b", "c"]
    assert list(sensitivity_weights({"a": -10.0, "b": -5.0, "c": 3.0}, tasks)) == [2.0, 1.5, 1.0]
    assert list(sensitivity_weights({"a": 1.0, "b": 0.0, "c": 3.0}, tasks)) == [1.0, 1.0, 1.0]
    with pytest.raises(BadInput, match="lacks task"):
        sensitivity_weights({"a": 1.0}, tasks)
    with pytest.raises(BadInput):
        GroupCost("sensitivity")
    metrics = {"partitions": [[tasks]] * 2, "delta_mtl": {"test": {"per_task": {"a": -1, "b": 2, "c": 0}}}}
    assert shared_per_task_delta(metrics) == {"a": -1.0, "b": 2.0, "c": 0.0}
    with pytest.raises(BadInput, match="not an all-shared"):
        shared_per_task_delta({**metrics, "partitions": [[tasks], [["a"], ["b", "c"]]]})
    # a sensitivity tree records its weights
    aff, _ = instance(1, 3, 2)
    tree = make_tree([[aff.tasks]] * 2, aff.tasks, aff.locations, aff.affinity, aff.stage_params, aff.head_params,
                     cost=sensitivity_cost({"t0": -4.0, "t1": -2.0, "t2": 0.0}, aff.tasks))
    assert tree.to_json()["cost"] == {"name": "sensitivity", "task_weights": [2.0, 1.5, 1.0]}


def test_build_cli_cost_option(cli, tmp_path):
    aff, _ = instance(2, 4, 4)
    path = tmp_path / "run" / "affinity.npz"
    path.parent.mkdir()
    save_affinity(path, aff)
    budget = str(int(aff.stage_params.sum() * 2 + aff.head_params.sum()))
    result = cli("build", "--affinity", path, "--params", budget, "--cost", "mean", "--json")
    assert result.code == 0, result.err
    tree = json.loads(result.out)
    assert tree["cost"]["name"] == "mean"
    assert tree["dissimilarity"] == pytest.approx(direct(tree["partitions"], aff, "mean"))
    assert_one_line_error(cli("build", "--affinity", path, "--params", budget, "--cost", "sensitivity"),
                          "metrics.json")
    shared = tmp_path / "run" / "branched" / "shared" / "metrics.json"
    shared.parent.mkdir(parents=True)
    delta = {"t0": -8.0, "t1": 1.0, "t2": -2.0, "t3": 0.5}
    shared.write_text(json.dumps({"partitions": [[aff.tasks]] * 4, "delta_mtl": {"test": {"per_task": delta}}}))
    result = cli("build", "--affinity", path, "--params", budget, "--cost", "sensitivity", "--json")
    assert result.code == 0, result.err
    tree = json.loads(result.out)
    weights = sensitivity_weights(delta, aff.tasks)
    assert tree["cost"]["task_weights"] == list(weights)
    assert tree["dissimilarity"] == pytest.approx(direct(tree["partitions"], aff, "sensitivity", weights))
    assert_one_line_error(cli("build", "--affinity", path, "--params", budget, "--cost", "median"), "cost")

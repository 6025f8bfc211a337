"""The learned sharing cost (branchnet.learned) against direct computations from its definitions:
the posterior against the closed form in function space, the evidence against scipy, the design
against the per-task formula of docs/design.md, the learned cost's optimum against brute force
over every tree of a window, model.json round trips, leave-one-tree-out against refits, and the
active loop against a synthetic oracle (counts asserted, not times)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.base import clone

from branchnet.errors import BadInput
from branchnet.learned import SearchSpace, SharingModel, run_loop
from branchnet.learned.bayes import BlockBayesLinear
from branchnet.learned.diagnostics import coverage, leave_one_tree_out, summarize
from branchnet.learned.features import SharingDesign
from branchnet.learned.model import Observation
from branchnet.learned.oracle import FAMILIES, SharingOracle
from branchnet.study.jobs import tree_id
from branchnet.tree.costs import tree_dissimilarity
from branchnet.tree.group_cost import group_term, learned_cost
from branchnet.tree.sampling import TreeSpace
from branchnet.tree.search.problem import partitions_to_labels


def _regression_data(seed: int = 0, n: int = 40):
    rng = np.random.default_rng(seed)
    sizes, p = [3, 4, 2], 9
    x = rng.normal(size=(n, p))
    groups = rng.integers(0, 2, n)
    mean = rng.normal(size=p) * 0.3
    y = x @ rng.normal(size=p) + rng.normal(size=n) * np.array([0.3, 1.0])[groups]
    return sizes, x, y, groups, mean


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_posterior_is_the_closed_form_in_function_space(seed):
    sizes, x, y, groups, mean = _regression_data(seed)
    model = BlockBayesLinear(sizes, [1.0, 0.5, 2.0], prior_mean=mean, noise_scales=[0.3, 1.0]).fit(x, y, groups)
    column = np.repeat(np.arange(3), sizes)
    prior = np.diag(model.scales_[column] ** 2)
    noise = np.diag(model.noise_[groups] ** 2)
    k = x @ prior @ x.T + noise
    direct_mean = mean + prior @ x.T @ np.linalg.solve(k, y - x @ mean)
    direct_cov = prior - prior @ x.T @ np.linalg.solve(k, x @ prior)
    np.testing.assert_allclose(model.coef_, direct_mean, atol=1e-10)
    np.testing.assert_allclose(model.coef_cov_, direct_cov, atol=1e-10)
    direct_evidence = stats.multivariate_normal(x @ mean, k).logpdf(y)
    assert model.log_evidence_ == pytest.approx(direct_evidence, abs=1e-8)
    # predictions: mean x theta, sd sqrt(x Sigma x^T) (+ noise)
    new = np.random.default_rng(seed + 9).normal(size=(5, x.shape[1]))
    m, s = model.predict(new, return_std=True, groups=np.zeros(5, int), noise=True)
    np.testing.assert_allclose(m, new @ direct_mean, atol=1e-10)
    np.testing.assert_allclose(s, np.sqrt(np.diag(new @ direct_cov @ new.T) + model.noise_[0] ** 2), atol=1e-10)


def test_scales_maximise_the_evidence_plus_hyperprior():
    sizes, x, y, groups, mean = _regression_data(4, n=60)
    model = BlockBayesLinear(sizes, [1.0, 0.5, 2.0], prior_mean=mean, noise_scales=[0.3, 1.0], hyper_sd=1.0)
    model.fit(x, y, groups)
    h0 = np.log([1.0, 0.5, 2.0, 0.3, 1.0])

    def objective(h):
        value = model.log_evidence(x, y, groups, np.exp(h[:3]), np.exp(h[3:]))
        return -(value - 0.5 * np.sum((h - h0) ** 2))

    best = optimize.minimize(objective, h0, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-8,
                                                                           "fatol": 1e-10})
    assert objective(model.log_scales_) <= best.fun + 1e-6
    # and the analytic gradient is the finite difference of the objective
    parts = {"grams": [x[:, c] @ x[:, c].T for c in (slice(0, 3), slice(3, 7), slice(7, 9))], "groups": groups,
             "resid": y - x @ mean, "log_h0": h0, "learn": np.ones(5)}
    point = h0 + 0.2
    assert optimize.check_grad(lambda h: model._neg_objective(h, parts)[0],
                               lambda h: model._neg_objective(h, parts)[1], point) < 1e-4


def test_estimator_follows_the_scikit_learn_contract():
    sizes, x, y, groups, mean = _regression_data(5)
    model = BlockBayesLinear(sizes, [1.0, 0.5, 2.0], noise_scales=[1.0])
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    with pytest.raises(Exception):
        model.predict(x)  # not fitted
    fitted = model.fit(x, y)
    assert fitted.score(x, y) > 0.5  # RegressorMixin's R^2 on its own data
    draws = fitted.sample_coef(np.random.default_rng(0), 4000)
    np.testing.assert_allclose(draws.mean(axis=0), fitted.coef_, atol=0.05)
    np.testing.assert_allclose(np.cov(draws.T), fitted.coef_cov_, atol=0.05)


# ---------------------------------------------------------------------------------
# The design


def _space(n: int = 4, d: int = 3, seed: int = 0) -> SearchSpace:
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n)]
    return SearchSpace(tasks, [f"s{j}" for j in range(d)], rng.integers(10, 100, d) * 1000,
                       rng.integers(1, 5, n) * 1000)


@pytest.mark.parametrize("n,d,seed", [(3, 2, 0), (4, 3, 1), (5, 4, 2)])
def test_design_rows_are_the_per_task_formula(n, d, seed):
    rng = np.random.default_rng(seed)
    space = _space(n, d, seed)
    measures = {"a": rng.uniform(size=(d, n, n)), "b": rng.uniform(-1, 1, size=(d, n, n))}
    design = SharingDesign(n, d, measures, seeds=[100, 101])
    theta = rng.normal(size=design.num_coefficients)
    sl = design.slices
    b, u = theta[sl["b"]], theta[sl["u"]].reshape(2, n)
    mu, kappa, alpha = theta[sl["mu"]], theta[sl["kappa"]].reshape(n, d), theta[sl["alpha"]]
    v = np.zeros((n, d, n))
    v[~np.eye(n, dtype=bool)[:, None, :].repeat(d, 1)] = theta[sl["v"]]
    off = ~np.eye(n, dtype=bool)
    x = {}
    for name, a in measures.items():
        dis = 1.0 - a
        rms = np.sqrt(np.mean(dis[:, off] ** 2))
        x[name] = -dis / rms
    trees = TreeSpace(space.tasks, space.stage_params, space.head_params)
    for rank in range(0, trees.size, max(1, trees.size // 25)):
        parts = trees.partitions(rank)
        labels = partitions_to_labels(parts, space.tasks)
        rows = design.task_rows(labels[None], [101])[0]
        for t in range(n):
            direct = b[t] + u[1, t]
            for s in range(d):
                for j in range(n):
                    if j != t and labels[s, t] == labels[s, j]:
                        w = mu[s] + kappa[t, s] + v[t, s, j] + sum(al * x[m][s, t, j]
                                                                   for al, m in zip(alpha, measures))
                        direct += w
            assert rows[t] @ theta == pytest.approx(direct, abs=1e-10)
        # Δ of an unseen seed = intercept - the learned cost's dissimilarity
        delta = design.delta_rows(labels[None], [None])[0] @ theta
        cost = learned_cost(design.pair_costs(theta))
        assert delta == pytest.approx(design.intercept(theta)
                                      - tree_dissimilarity(parts, space.tasks, np.zeros((d, n, n)), cost), abs=1e-10)


def test_learned_group_term_is_the_sum_of_pair_costs():
    rng = np.random.default_rng(3)
    c = rng.normal(size=(2, 5, 5))
    cost = learned_cost(c)
    sym = (c + c.transpose(0, 2, 1)) / 2
    members = np.array([0, 2, 3])
    assert group_term(cost.distances(np.zeros((2, 5, 5)))[1], members, cost.form) == pytest.approx(
        sum(sym[1, i, j] for i, j in [(0, 2), (0, 3), (2, 3)]))
    with pytest.raises(BadInput):
        cost.distances(np.zeros((2, 4, 4)))  # a model of other tasks
    with pytest.raises(BadInput):
        learned_cost(np.full((2, 3, 3), np.nan))


@pytest.mark.parametrize("n,d,seed", [(3, 3, 0), (4, 3, 1), (4, 4, 2), (5, 3, 3), (5, 4, 4)])
def test_learned_cost_optimum_in_a_window_is_the_brute_force_one(n, d, seed):
    """The exact search under a learned cost (pair costs of both signs) in the window [0.9 B, B]
    against the best of every tree of the window (ties: fewer params)."""
    rng = np.random.default_rng(seed)
    space = _space(n, d, seed)
    for trial in range(3):
        c = rng.normal(size=(d, n, n)) + rng.normal() * 0.5
        cost = learned_cost(c)
        for fraction in (0.3, 0.55, 0.8):
            budget = space.low + fraction * (space.high - space.low)
            window = TreeSpace(space.tasks, space.stage_params, space.head_params, space.window(budget))
            if window.size == 0:
                continue
            trees = window.all()
            values = [(round(tree_dissimilarity(t, space.tasks, np.zeros((d, n, n)), cost), 9), space.params(t))
                      for t in trees]
            best = min(values)
            found = space.best_tree(cost, budget)
            got = (round(tree_dissimilarity(found, space.tasks, np.zeros((d, n, n)), cost), 9), space.params(found))
            assert got == best, (trial, fraction)
            low, high = space.window(budget)
            assert low * (1 - 1e-9) <= space.params(found) <= high * (1 + 1e-9)


def test_an_empty_window_is_refused():
    space = _space(3, 2, 0)
    gaps = sorted({space.params(t) for t in TreeSpace(space.tasks, space.stage_params, space.head_params).all()})
    budget = (gaps[0] + gaps[1]) / 2 if gaps[1] > gaps[0] / 0.9 * 0.9 else None
    for low, high in zip(gaps, gaps[1:]):
        if high * 0.9 > low:  # a budget just below `high` whose window starts above `low`
            budget = high - 1
            if 0.9 * budget > low:
                break
    else:
        pytest.skip("every window of this space holds a tree")
    with pytest.raises(BadInput, match="window"):
        space.best_tree(learned_cost(np.zeros((2, 3, 3))), budget)


# ---------------------------------------------------------------------------------
# The model


def _observations(oracle: SharingOracle, count: int, seeds=(100, 101), key: int = 0) -> list[Observation]:
    space = oracle.space
    trees = TreeSpace(space.tasks, space.stage_params, space.head_params, include_ends=False)
    rng = np.random.default_rng(key)
    out = []
    for i in range(count):
        parts = trees.partitions(int(rng.integers(trees.size)))
        seed = seeds[i % len(seeds)]
        out.append(Observation(tree_id(parts, space.tasks), parts, seed, oracle.measure(parts, seed),
                               space.params(parts), "oracle"))
    return out


def test_model_fit_at_fixed_scales_is_the_regression_on_its_design():
    space = _space(4, 3, 5)
    oracle = SharingOracle.generate(space, "pairwise", 1)
    model = SharingModel(space.tasks, space.locations, oracle.prior("informative"))
    observations = _observations(oracle, 12)
    model.fit(observations, learn=False)
    design = SharingDesign(4, 3, oracle.prior("informative"), [100, 101])
    labels = np.stack([partitions_to_labels(o.partitions, space.tasks) for o in observations])
    x = design.task_rows(labels, [o.seed for o in observations]).reshape(-1, design.num_coefficients)
    y = np.array([[o.per_task[t] for t in space.tasks] for o in observations]).reshape(-1)
    groups = np.tile(np.arange(4), len(observations))
    from branchnet.learned.features import BLOCKS
    from branchnet.learned.model import DEFAULT_ALPHA0, DEFAULT_NOISE, DEFAULT_SCALES

    direct = BlockBayesLinear(design.block_sizes(), [DEFAULT_SCALES[b] for b in BLOCKS], [False] * 6,
                              design.prior_mean(DEFAULT_ALPHA0), [DEFAULT_NOISE] * 4, False).fit(x, y, groups,
                                                                                               learn=False)
    np.testing.assert_allclose(model.regression.coef_, direct.coef_, atol=1e-10)
    mean, sd = model.predict_delta([o.partitions for o in observations[:3]], seed=100)
    rows = design.delta_rows(labels[:3], [100] * 3)
    np.testing.assert_allclose(mean, rows @ direct.coef_, atol=1e-10)
    np.testing.assert_allclose(sd, np.sqrt(np.einsum("ij,jk,ik->i", rows, direct.coef_cov_, rows)), atol=1e-10)


def test_prior_alone_ranks_trees_by_mean_pairwise_dissimilarity():
    space = _space(4, 3, 6)
    rng = np.random.default_rng(0)
    affinity = rng.uniform(size=(3, 4, 4))
    affinity = (affinity + affinity.transpose(0, 2, 1)) / 2
    model = SharingModel(space.tasks, space.locations, {"rsa": affinity})
    trees = TreeSpace(space.tasks, space.stage_params, space.head_params).all()
    mean, _ = model.predict_delta(trees)
    pairsum = [tree_dissimilarity(t, space.tasks, affinity, learned_cost(1.0 - affinity)) for t in trees]
    assert stats.spearmanr(mean, pairsum).statistic == pytest.approx(-1.0)


def test_model_json_round_trip_gives_the_same_predictions(tmp_path):
    from branchnet.learned import load_model

    space = _space(4, 3, 7)
    oracle = SharingOracle.generate(space, "clusters", 2)
    model = SharingModel(space.tasks, space.locations, oracle.prior("informative")).fit(_observations(oracle, 10))
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model.to_json()))
    again = load_model(tmp_path)
    trees = TreeSpace(space.tasks, space.stage_params, space.head_params).all()[:40]
    for seed in (None, 100):
        np.testing.assert_allclose(again.predict_delta(trees, seed=seed)[0], model.predict_delta(trees, seed=seed)[0],
                                   atol=1e-9)
        np.testing.assert_allclose(again.predict_delta(trees, seed=seed)[1], model.predict_delta(trees, seed=seed)[1],
                                   atol=1e-9)
    np.testing.assert_allclose(again.pair_costs(), model.pair_costs(), atol=1e-9)
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(BadInput, match="not a learned model"):
        load_model(path)
    path.write_text("{not json")
    with pytest.raises(BadInput, match="not readable JSON"):
        load_model(path)
    with pytest.raises(BadInput, match="no learned model"):
        load_model(tmp_path / "missing")


def test_leave_one_tree_out_is_the_refit_without_that_tree():
    space = _space(4, 3, 8)
    oracle = SharingOracle.generate(space, "sensitive", 3)
    observations = _observations(oracle, 14)
    model = SharingModel(space.tasks, space.locations, oracle.prior("none")).fit(observations)
    entries = leave_one_tree_out(model)
    assert len(entries) == len(observations)
    target = observations[5].tree_id
    others = [o for o in observations if o.tree_id != target]
    direct = SharingModel(space.tasks, space.locations, oracle.prior("none"), scales=model.scales,
                          noise=model.noise)
    direct.fit(observations, learn=False)  # the same columns (every seed) as the full fit
    direct = direct.without([o.tree_id != target for o in observations])
    assert len(direct.observations) == len(others)
    entry = next(e for e in entries if e["tree_id"] == target)
    mean, sd = direct.predict_delta([observations[5].partitions], seed=entry["seed"], noise=True)
    assert entry["predicted"] == pytest.approx(float(mean[0]), abs=1e-9)
    assert entry["sd"] == pytest.approx(float(sd[0]), abs=1e-9)
    windows = {int(space.low + 0.5 * (space.high - space.low)): (space.low, space.high)}
    summary = summarize(entries, windows, space.tasks)
    assert summary["networks"] == len(entries)
    rho = stats.spearmanr([e["predicted"] for e in entries], [e["measured"] for e in entries]).statistic
    assert summary["spearman_networks"] == pytest.approx(rho)


def test_coverage_counts_values_inside_the_intervals():
    measured = [0.0, 1.0, 2.0, 10.0]
    got = coverage(measured, [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], levels=(0.5, 0.95))
    # |m - p| <= 0.674 (50 %): 1 of 4; <= 1.96 (95 %): 2 of 4
    assert got == {"0.50": 0.25, "0.95": 0.5}


# ---------------------------------------------------------------------------------
# The loop against a synthetic oracle


def _budgets(space: SearchSpace) -> list[int]:
    return [int(space.low + f * (space.high - space.low)) for f in (0.3, 0.55, 0.8)]


def test_loop_proposals_are_reproducible_and_never_repeat_a_network():
    space = _space(4, 3, 9)
    oracle = SharingOracle.generate(space, "pairwise", 4)
    budgets = [b for b in _budgets(space) if TreeSpace(space.tasks, space.stage_params, space.head_params,
                                                       space.window(b)).size]
    runs = [run_loop(SharingModel(space.tasks, space.locations, oracle.prior("informative")), space, budgets, 9,
                     oracle.train, seeds=[100, 101], batch=2, key=7) for _ in range(2)]
    assert [p.to_json() for p in runs[0].proposals] == [p.to_json() for p in runs[1].proposals]
    keys = [(p.tree_id, p.seed) for p in runs[0].proposals]
    assert len(keys) == len(set(keys)) == 9
    assert [p.budget for p in runs[0].proposals] == [budgets[i % len(budgets)] for i in range(9)]
    for p in runs[0].proposals:
        low, high = space.window(p.budget)
        assert low * (1 - 1e-9) <= space.params(p.partitions) <= high * (1 + 1e-9)


def test_resumed_loop_equals_the_uninterrupted_one():
    space = _space(4, 3, 10)
    oracle = SharingOracle.generate(space, "clusters", 5)
    budgets = _budgets(space)[:2]
    prior = oracle.prior("informative")
    whole = run_loop(SharingModel(space.tasks, space.locations, prior), space, budgets, 8, oracle.train,
                     seeds=[100, 101], batch=2, key=3)
    # killed during the third round: 3 rounds of 2 proposals made (written before they train), 3 trained
    made = whole.proposals[:6]
    done = oracle.train(made[:3])
    again = run_loop(SharingModel(space.tasks, space.locations, prior), space, budgets, 8, oracle.train,
                     seeds=[100, 101], batch=2, key=3, observations=done, proposals=made)
    assert [p.to_json() for p in again.proposals] == [p.to_json() for p in whole.proposals]
    assert again.recommended == whole.recommended


def _growing_space(n: int, d: int, seed: int) -> SearchSpace:
    """Stages that grow with depth, as a ResNet's: windows of tens to hundreds of trees."""
    rng = np.random.default_rng(seed)
    stage = np.sort(rng.integers(10, 100, d)) * 1000 * np.array([1, 1, 2, 4][:d])
    return SearchSpace([f"t{i}" for i in range(n)], [f"s{j}" for j in range(d)], stage, rng.integers(1, 5, n) * 1000)


@pytest.mark.parametrize("n,d", [(4, 3), (5, 4)])
def test_loop_finds_the_oracles_best_tree_far_more_often_than_random_proposals(n, d):
    """Over every generator family and two hidden truths each, with 4 N networks: the loop
    trains (finds) the oracle's best tree of a budget far more often than as many random
    proposals do, and recommends exactly it far more often than a user would pick it as the
    best measured of those random trees."""
    networks = 4 * n
    hits = {"proposed": 0, "recommended": 0, "random proposed": 0, "random best measured": 0}
    cases = 0
    for family in FAMILIES:
        for key in range(2):
            space = _growing_space(n, d, 100 + key)
            oracle = SharingOracle.generate(space, family, key, noise=1.0)
            budgets = [b for b in _budgets(space) if TreeSpace(space.tasks, space.stage_params, space.head_params,
                                                                space.window(b)).size > 1]
            result = run_loop(SharingModel(space.tasks, space.locations, oracle.prior("informative", key)), space,
                              budgets, networks, oracle.train, seeds=[100, 101], batch=2, key=key)
            rng = np.random.default_rng(key)
            for b in budgets:
                best = tree_id(oracle.best(b), space.tasks)
                cases += 1
                hits["proposed"] += any(p.tree_id == best for p in result.proposals)
                hits["recommended"] += tree_id(result.recommended[b], space.tasks) == best
                window = TreeSpace(space.tasks, space.stage_params, space.head_params, space.window(b))
                drawn = [window.partitions(int(r)) for r in rng.integers(0, window.size, networks // len(budgets))]
                hits["random proposed"] += any(tree_id(t, space.tasks) == best for t in drawn)
                measured = [np.mean(list(oracle.measure(t, 100).values())) for t in drawn]
                hits["random best measured"] += tree_id(drawn[int(np.argmax(measured))], space.tasks) == best
    assert cases >= 20
    assert hits["proposed"] >= 2 * hits["random proposed"] + 4, hits
    assert hits["proposed"] >= cases // 2, hits
    assert hits["recommended"] >= 3 * hits["random best measured"] + 3, hits

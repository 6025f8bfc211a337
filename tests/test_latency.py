"""Latency as a budget: parsing, the exact search against brute force on given latency tables (no
timing at all), the measured table's cache in the run directory, and ``build --latency`` end to
end with its one-line errors (measurements here use one or two rounds: only structure is checked).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from branchnet.affinity import AffinityData, save_affinity
from branchnet.errors import BadInput
from branchnet.tree.search import build_problem, pareto_sweep, search_tree, tree_latency
from branchnet.tree.search.problem import is_nested
from branchnet.tree.search.scalable import scalable_search
from branchnet.units import format_latency, parse_latency
from conftest import TINY_CONFIG, assert_one_line_error
from test_tree_search import TOL, brute_force, check_tree, random_instance


@pytest.mark.parametrize("text, seconds", [("12ms", 0.012), ("0.5s", 0.5), ("800us", 8e-4), (" 3 ms ", 0.003),
                                           ("1e-3s", 1e-3), ("800µs", 8e-4), ("2s", 2.0)])
def test_parse_latency(text, seconds):
    assert parse_latency(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("text, fragment", [("12", "needs a unit"), ("12MS", "unit s, ms or us"),
                                            ("12 min", "unit s, ms or us"), ("fast", "unit s, ms or us"),
                                            ("0ms", "positive"), ("-1ms", "positive"), ("", "unit")])
def test_parse_latency_rejects_in_one_line(text, fragment):
    with pytest.raises(BadInput) as err:
        parse_latency(text, "--latency")
    assert fragment in str(err.value) and "\n" not in str(err.value) and "--latency" in str(err.value)


def test_format_latency():
    assert format_latency(0.01234) == "12.3 ms" and format_latency(2.5) == "2.5 s"
    assert format_latency(8e-4) == "800 us" and format_latency(None) == "-"


def _latency_tables(rng, aff):
    return (rng.uniform(0.5, 5.0, size=aff.num_locations), rng.uniform(0.0, 1.0, size=aff.num_tasks))


def _best(trees, params=None, flops=None, latency=None):
    """Least dissimilarity within every given budget; ties to fewer params, FLOPs, latency."""
    fit = [t for t in trees if (params is None or t[1] <= params) and (flops is None or t[2] <= flops)
           and (latency is None or t[4] <= latency + 1e-9)]
    least = min(t[0] for t in fit)
    return min((t for t in fit if t[0] <= least + TOL), key=lambda t: (t[1], t[2] or 0, t[4]))


def _with_latency(trees, stage, head):
    out = []
    for diss, params, flops, chain in trees:
        counts = np.array([len(p) for p in chain])
        out.append((diss, params, flops, chain, float(counts @ stage + head.sum())))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_exact_search_with_a_latency_budget_matches_brute_force(seed):
    rng = np.random.default_rng(500 + seed)
    n, depth = [(2, 1), (3, 2), (3, 4), (4, 2), (4, 3), (4, 4), (5, 2), (5, 3)][seed]
    aff = random_instance(rng, n, depth, flops=bool(seed % 2))
    stage, head = _latency_tables(rng, aff)
    trees = _with_latency(brute_force(aff), stage, head)
    lo, hi = min(t[4] for t in trees), max(t[4] for t in trees)
    p_lo, p_hi = min(t[1] for t in trees), max(t[1] for t in trees)
    for latency in [lo, hi] + [float(rng.uniform(lo, hi)) for _ in range(3)]:
        params = None if seed % 3 == 0 else float(rng.uniform(p_lo, p_hi))
        flops = None
        if aff.stage_flops is not None and seed % 4 == 1:
            flops = float(np.median([t[2] for t in trees]))
        fitting = [t for t in trees if (params is None or t[1] <= params) and (flops is None or t[2] <= flops)
                   and t[4] <= latency + 1e-9]
        if not fitting:
            continue
        want = _best(trees, params, flops, latency)
        got = search_tree(aff, params, flops, method="exact", latency_budget=latency, stage_latency=stage,
                          head_latency=head)
        check_tree(got, aff)
        predicted = tree_latency(got.partitions, stage, head)
        assert predicted <= latency + 1e-9 and got.extra["latency"]["predicted_s"] == pytest.approx(predicted)
        assert got.extra["latency"]["budget_s"] == latency
        assert got.dissimilarity == pytest.approx(want[0], abs=TOL)
        assert (got.params, predicted) == (want[1], pytest.approx(want[4]))


def test_scalable_search_keeps_a_latency_budget():
    """Not exact (it is a local search), but every tree it visits keeps every budget."""
    rng = np.random.default_rng(550)
    aff = random_instance(rng, 4, 4)
    stage, head = _latency_tables(rng, aff)
    trees = _with_latency(brute_force(aff), stage, head)
    latency = float(np.quantile([t[4] for t in trees], 0.3))
    params = float(np.quantile([t[1] for t in trees], 0.6))
    problem = build_problem(aff, params, latency_budget=latency, stage_latency=stage, head_latency=head)
    labels = scalable_search(problem, num_counts=6, num_starts=2, rounds=2)
    counts = np.array([len(np.unique(row)) for row in labels])
    assert problem.fits(counts) and is_nested(labels)
    assert float(counts @ stage + head.sum()) <= latency + 1e-9 and problem.params_of(counts) <= params
    assert problem.key(labels)[3] == pytest.approx(float(counts @ stage + head.sum()))
    assert problem.dissimilarity(labels) >= _best(trees, params, latency=latency)[0] - TOL


@pytest.mark.parametrize("seed", range(3))
def test_sweep_under_a_latency_cap_is_the_brute_force_path(seed):
    rng = np.random.default_rng(600 + seed)
    aff = random_instance(rng, int(rng.integers(2, 5)), int(rng.integers(2, 4)), flops=False)
    stage, head = _latency_tables(rng, aff)
    trees = _with_latency(brute_force(aff), stage, head)
    cap = float(np.median([t[4] for t in trees]))
    path = pareto_sweep(aff, method="exact", latency_budget=cap, stage_latency=stage, head_latency=head)
    assert all(tree_latency(t.partitions, stage, head) <= cap + 1e-9 for t in path)
    for i, tree in enumerate(path):
        want = _best(trees, tree.params, latency=cap)
        assert (tree.params, tree.dissimilarity) == (want[1], pytest.approx(want[0], abs=TOL))
    optima = {_best(trees, b, latency=cap)[1] for b in sorted({t[1] for t in trees if t[4] <= cap + 1e-9})}
    assert optima == {t.params for t in path}


def test_a_loose_latency_budget_changes_nothing_and_a_tight_one_is_refused():
    rng = np.random.default_rng(700)
    aff = random_instance(rng, 5, 4)
    stage, head = _latency_tables(rng, aff)
    budget = float(aff.stage_params.sum() * 3 + aff.head_params.sum())
    plain = search_tree(aff, budget)
    loose = search_tree(aff, budget, latency_budget=1e9, stage_latency=stage, head_latency=head)
    assert (loose.dissimilarity, loose.params) == (plain.dissimilarity, plain.params)
    assert "latency" not in plain.extra and "latency" in loose.extra
    shared = float(stage.sum() + head.sum())
    with pytest.raises(BadInput) as err:
        search_tree(aff, budget, latency_budget=shared * 0.99, stage_latency=stage, head_latency=head)
    text = str(err.value)
    assert "below the all-shared network's measured latency" in text and format_latency(shared) in text
    assert search_tree(aff, None, latency_budget=shared, stage_latency=stage, head_latency=head).group_counts == [1] * 4
    with pytest.raises(BadInput, match="needs measured latencies"):
        search_tree(aff, budget, latency_budget=1.0)
    with pytest.raises(BadInput, match="stage-latency has 2 values"):
        search_tree(aff, budget, latency_budget=1.0, stage_latency=[1, 2], head_latency=head)
    with pytest.raises(BadInput, match="both"):
        search_tree(aff, budget, stage_latency=stage)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with an affinity file of three tasks priced for the tiny config, and its config."""
    from branchnet.config import load_config
    from branchnet.steps.build import costs_from_backbone

    root = tmp_path_factory.mktemp("latency")
    config_path = root / "tiny.yaml"
    config_path.write_text(TINY_CONFIG.format(root=root / "cache", tasks="[seg, depth, edges]")
                           .replace("width: 0.125", "width: 0.0625"))
    config = load_config(config_path)
    costs = costs_from_backbone(config, config.task_names)
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(4, 3, 3))
    a = (a + a.transpose(0, 2, 1)) / 2
    for d in range(4):
        np.fill_diagonal(a[d], 1.0)
    runs = root / "run"
    save_affinity(runs / "affinity.npz", AffinityData(
        affinity=a, tasks=config.task_names, locations=["layer1", "layer2", "layer3", "layer4"],
        backbone="resnet18", input_size=(32, 32), **{k: np.asarray(v) for k, v in costs.items()}).validate())
    return {"runs": runs, "config": config_path, "affinity": runs / "affinity.npz"}


def test_latency_table_is_measured_once_and_cached_per_device_batch_and_size(run_dir):
    import dataclasses

    from branchnet.affinity import load_affinity
    from branchnet.config import load_config
    from branchnet.runs import latency_cache_path
    from branchnet.steps.build import latency_probe

    config = load_config(run_dir["config"])
    aff = load_affinity(run_dir["affinity"])
    probe = latency_probe(config, aff, run_dir["runs"], "cpu", 2, repeats=2, warmup=0)
    table = probe.table
    assert not probe.cached and probe.cache == latency_cache_path(run_dir["runs"], table.device, 2, (32, 32))
    assert probe.cache.parent == run_dir["runs"] / "latency" and "-b2-32x32" in probe.cache.name
    assert len(table.stage) == 4 and len(table.head) == 3 and table.batch == 2 and table.threads == 1
    assert all(np.isfinite(v) and v > 0 for v in table.stage + table.head)
    stored = json.loads(probe.cache.read_text())
    assert stored["table"]["stage_latency_s"] == table.stage and stored["key"]["batch"] == 2
    again = latency_probe(config, aff, run_dir["runs"], "cpu", 2)
    assert again.cached and again.table.stage == table.stage and again.table.head == table.head
    # other heads are another network: measured again, in the same file (same device, batch, size)
    wider = dataclasses.replace(config, model=dataclasses.replace(config.model, head_channels=16))
    other = latency_probe(wider, aff, run_dir["runs"], "cpu", 2, repeats=1, warmup=0)
    assert not other.cached and other.cache == probe.cache
    assert latency_probe(config, aff, run_dir["runs"], "cpu", 1, repeats=1, warmup=0).cache != probe.cache


def _seed_cache(run_dir, batch=1):
    from branchnet.affinity import load_affinity
    from branchnet.config import load_config
    from branchnet.steps.build import latency_probe

    return latency_probe(load_config(run_dir["config"]), load_affinity(run_dir["affinity"]), run_dir["runs"],
                         "cpu", batch, repeats=1, warmup=0, refresh=True).table


def test_build_with_a_latency_budget_reports_prediction_and_measurement(cli, run_dir, tmp_path):
    table = _seed_cache(run_dir)
    shared = table.predict([[["seg", "depth", "edges"]]] * 4)
    separate = table.predict([[["seg"], ["depth"], ["edges"]]] * 4)
    budget_ms = 1e3 * (shared + 0.5 * (separate - shared))
    out = tmp_path / "tree.json"
    result = cli("build", "--affinity", run_dir["affinity"], "--latency", f"{budget_ms:.6f}ms", "--config",
                 run_dir["config"], "--out", out)
    assert result.code == 0, result.err
    assert "latency of the tree: predicted" in result.out and "measured" in result.out
    info = json.loads(out.read_text())["latency"]
    assert info["predicted_s"] <= budget_ms / 1e3 + 1e-12 and info["budget_s"] == pytest.approx(budget_ms / 1e3)
    assert info["predicted_s"] == pytest.approx(table.predict(json.loads(out.read_text())["partitions"]))
    assert info["measured_s"] > 0 and info["table_cached"] and info["batch"] == 1
    assert info["stage_latency_s"] == table.stage and info["device_type"] == "cpu"


def test_build_latency_errors_are_one_line(cli, run_dir, tmp_path):
    table = _seed_cache(run_dir)
    shared = table.predict([[["seg", "depth", "edges"]]] * 4)
    out = tmp_path / "tree.json"
    args = ("build", "--affinity", run_dir["affinity"], "--config", run_dir["config"], "--out", out)
    result = cli(*args, "--latency", f"{shared * 1e6 * 0.5:.3f}us")
    assert_one_line_error(result, "below the all-shared network's measured latency", format_latency(shared))
    assert_one_line_error(cli(*args, "--latency", "12"), "needs a unit")
    assert_one_line_error(cli(*args, "--profile-device", "cpu"), "add a latency budget")
    assert_one_line_error(cli(*args, "--latency", "1s", "--random", 3, "--params", "1M"), "--random")
    if not torch.cuda.is_available():
        assert_one_line_error(cli(*args, "--latency", "1s", "--profile-device", "cuda"), "no CUDA GPU")
    assert_one_line_error(cli("build", "--affinity", run_dir["affinity"], "--latency", "1s", "--out", out),
                          "--config")
    assert not out.exists()

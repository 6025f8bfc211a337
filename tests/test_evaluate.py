"""``branchnet evaluate``: the study's numbers against trees.csv, resume after a crash, two
ranks equal one, bad input; ``affinity --epoch E`` from kept checkpoints.

One tiny run (two tasks, 32x32, one epoch) is shared by every test: single-task models,
RSA and FAFS affinities, one budget whose window holds two trees, one random tree.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from branchnet.errors import BadInput
from conftest import assert_one_line_error, study_run

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["seg", "depth"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _without_timing(rows):
    from branchnet.study.table import TIMING_COLUMNS

    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_cache):
    """The shared run: a one-seed study, then a two-seed one that crashes inside ``fit`` on its
    second new network and is rerun with --resume."""
    import branchnet.train.engine as engine
    from branchnet.steps import evaluate as ev

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun ranks: the same floats
    root = tmp_path_factory.mktemp("evaluate")
    config, runs, single = study_run(root, data_cache, "[seg, depth]", "epochs: 1, keep_checkpoints: true")
    config_path = root / "tiny.yaml"
    stage = single["seg"]["stage_params"]
    heads = single["seg"]["head_params"]["seg"] + single["depth"]["head_params"]["depth"]
    budget = stage[0] + 2 * sum(stage[1:]) + heads  # the tree that shares stage 0 only
    options = dict(budgets=[budget], random=1, quiet=True)
    ev.evaluate(config, runs, seeds=1, **options)
    one_seed = _rows(runs / "evaluate" / "trees.csv")

    calls = {"fit": 0, "history": 0, "resumed": []}
    real_history = engine.write_history

    def crashing_history(*args, **kwargs):
        calls["history"] += 1
        real_history(*args, **kwargs)  # the epoch's checkpoint is written before this
        if calls["history"] == 2:
            raise RuntimeError("killed inside fit")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "write_history", crashing_history)
        with pytest.raises(RuntimeError, match="killed inside fit"):
            ev.evaluate(config, runs, seeds=2, **options)
    real_fit = engine.fit

    def counted_fit(*args, **kwargs):
        calls["fit"] += 1
        calls["resumed"].append(bool(kwargs.get("resume")))
        return real_fit(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "fit", counted_fit)
        summary = ev.evaluate(config, runs, seeds=2, resume=True, **options)
    torch.set_num_threads(threads)
    return {"config": config, "config_path": config_path, "runs": runs, "budget": budget, "one_seed": one_seed,
            "summary": summary, "calls": calls, "single": single}


def test_resume_trains_only_the_missing_networks(study):
    rows = _rows(study["runs"] / "evaluate" / "trees.csv")
    trees = sorted({r["tree_id"] for r in rows})
    # a second seed for every tree; its first network finished before the crash and is kept,
    # the second continues from its checkpoint, the others are trained
    assert study["calls"]["fit"] == len(trees) - 1
    assert study["calls"]["resumed"] == [True] + [False] * (len(trees) - 2)
    assert {r["seed"] for r in rows} == {"0", "1"}
    assert _without_timing([r for r in rows if r["seed"] == "0"]) == _without_timing(study["one_seed"])
    for tree in trees:
        for seed in (0, 1):
            net = study["runs"] / "evaluate" / "nets" / tree / f"seed{seed}"
            assert (net / "run.json").is_file() and not (net / "checkpoint.pt").exists()
            record = json.loads((net / "run.json").read_text())
            assert record["fingerprint"]["evaluation_seed"] == seed
            assert record["fingerprint"]["settings"]["seed"] == 0  # the run's settings, as the baselines'
            metrics = json.loads((net / "metrics.json").read_text())
            assert metrics["trained_seed"] == seed


def test_summary_is_recomputed_from_trees_csv(study):
    from branchnet.affinity import load_affinity

    runs = study["runs"]
    rows = _rows(runs / "evaluate" / "trees.csv")
    summary = json.loads((runs / "evaluate" / "summary.json").read_text())
    single = study["single"]
    # Δ_MTL from the metric columns and the single-task metrics (survey Eq. 10)
    for r in rows:
        for split in ("test", "val"):
            seg, depth = single["seg"][split]["seg"]["mIoU"], single["depth"][split]["depth"]["rmse"]
            terms = [(float(r[f"seg_{split}_mIoU"]) - seg) / seg,  # higher is better
                     -(float(r[f"depth_{split}_rmse"]) - depth) / depth]  # lower is better
            assert float(r[f"delta_mtl_{split}"]) == pytest.approx(100 * np.mean(terms), abs=1e-9)
    # dissimilarity: sum over stages of the mean over groups of the worst pair's 1 - A
    for measure, path in (("rsa", "affinity.npz"), ("fafs", "affinity-fafs.npz")):
        data = load_affinity(runs / path)
        a = data.affinity[:, [data.tasks.index(t) for t in TASKS]][:, :, [data.tasks.index(t) for t in TASKS]]
        for r in rows:
            expected = sum((1 - a[d, 0, 1]) if "+" in stage else 0.0
                           for d, stage in enumerate(r["partitions"].split(" / ")))
            assert float(r[f"dissimilarity_{measure}"]) == pytest.approx(expected, abs=1e-12)
    trees = {}
    for r in rows:
        t = trees.setdefault(r["tree_id"], {"params": float(r["params"]), "delta": {}, "rsa": float(r["dissimilarity_rsa"])})
        t["delta"][r["seed"]] = float(r["delta_mtl_test"])
    mean = {k: np.mean(list(v["delta"].values())) for k, v in trees.items()}
    # Pareto front by brute force
    front = [k for k in trees if not any(
        trees[o]["params"] <= trees[k]["params"] and mean[o] >= mean[k]
        and (trees[o]["params"] < trees[k]["params"] or mean[o] > mean[k]) for o in trees if o != k)]
    assert sorted(summary["pareto_front"]) == sorted(front)
    (entry,) = summary["budgets"]
    assert entry["budget"] == study["budget"]
    population = sorted({r["tree_id"] for r in rows if r["source"] == "random"})
    assert sorted(entry["population_trees"]) == population
    for measure in ("rsa", "fafs"):
        tree = next(r["tree_id"] for r in rows if r["source"] == measure)
        item = entry["scorers"][measure]
        own = [float(r["delta_mtl_test"]) for r in rows if r["source"] == measure]
        diff = np.mean(own) - np.mean([mean[p] for p in population])
        assert item["vs_random"]["diff"] == pytest.approx(diff, abs=1e-12)
        assert item["vs_random"]["low"] <= diff + 1e-12 and diff - 1e-12 <= item["vs_random"]["high"]
        pop = np.array([mean[p] for p in population])
        assert item["percentile"] == pytest.approx(100 * (np.sum(pop < mean[tree]) + 0.5 * np.sum(pop == mean[tree]))
                                                   / len(pop))
        assert item["pareto"] == (tree in front)
    ids = list(trees)
    expected = scipy.stats.spearmanr([trees[k]["rsa"] for k in ids], [mean[k] for k in ids])
    assert summary["correlation"]["rsa"]["rho"] == pytest.approx(expected.statistic, abs=1e-12)
    assert summary["correlation"]["rsa"]["p"] == pytest.approx(expected.pvalue, abs=1e-12)
    assert summary["correlation"]["rsa"]["n"] == len(ids)
    md = (runs / "evaluate" / "summary.md").read_text()
    assert summary["verdict"]["rsa"] in md and "RSA" in summary["verdict"]["rsa"]
    assert (runs / "evaluate" / "pareto.png").stat().st_size > 10_000


def test_two_ranks_give_the_trees_of_one(study, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(study["runs"] / "single", runs / "single")
    for name in os.listdir(study["runs"]):
        if name.startswith("affinity") and name.endswith((".npz", ".json")):
            shutil.copy(study["runs"] / name, runs / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "BRANCHNET_QUIET": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "branchnet", "evaluate", "--config", str(study["config_path"]), "--runs", str(runs),
               "--budgets", str(study["budget"]), "--random", "1", "--seeds", "2", "--quiet"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _without_timing(_rows(runs / "evaluate" / "trees.csv")) == \
        _without_timing(_rows(study["runs"] / "evaluate" / "trees.csv"))


def test_bad_input_is_one_line_and_loses_nothing(study, cli, tmp_path):
    runs, config = study["runs"], study["config_path"]
    before = {p: p.stat().st_mtime_ns for p in (runs / "evaluate").rglob("*") if p.is_file()}
    single = study["single"]
    shared = sum(single["seg"]["stage_params"]) + single["seg"]["head_params"]["seg"] \
        + single["depth"]["head_params"]["depth"]
    cases = [
        (["--budgets", "100K"], ["outside", "all-shared", "all-separate"]),
        (["--budgets", str(int(shared * 1.2))], ["window", "holds no tree"]),
        (["--set", "train.weighting=dwa"], ["other settings", "train.weighting", "--force"]),
        (["--seeds", "0"], ["--seeds 0"]),
        (["--exhaustive", "--random", "2"], ["--exhaustive", "--random"]),
        (["--measures", "rsa,nope"], ["measure", "nope"]),
    ]
    for extra, fragments in cases:
        assert_one_line_error(cli("evaluate", "--config", config, "--runs", runs, *extra), *fragments)
    assert_one_line_error(cli("evaluate", "--config", config, "--runs", tmp_path / "empty"),
                          "no single-task model", "branchnet train-single")
    shutil.copytree(runs / "single", tmp_path / "no-affinity" / "single")
    assert_one_line_error(cli("evaluate", "--config", config, "--runs", tmp_path / "no-affinity"),
                          "no RSA affinity", "branchnet affinity")
    assert not (tmp_path / "no-affinity" / "evaluate").exists() and not (tmp_path / "empty").exists()
    after = {p: p.stat().st_mtime_ns for p in (runs / "evaluate").rglob("*") if p.is_file()}
    assert after == before


def test_random_beyond_the_window_takes_all_and_exhaustive_counts(study):
    from branchnet.steps.evaluate import prepare_study
    from branchnet.study.jobs import Costs, Scorer, plan_study
    from branchnet.tree.group_cost import GroupCost

    planned = prepare_study(study["config"], study["runs"], budgets=[study["budget"]], random=5, seeds=1)
    assert any("holds 2 tree(s)" in n and "taking all of them" in n for n in planned.notes)
    assert len([r for r in planned.plan.roles if r.source == "random"]) == 2
    assert planned.todo == []  # every network of it is trained already
    tasks = [f"t{i}" for i in range(7)]
    stub = Scorer("rsa", GroupCost("max"), planned.plan.scorers[0].affinity)
    costs = Costs(np.array([1.0, 2.0, 4.0, 8.0]), np.ones(7))
    with pytest.raises(BadInput, match=r"there are [0-9,]+ trees .*--branch-stages L.*--random K"):
        plan_study(tasks, ["a", "b", "c", "d"], costs, [stub], [50.0], 1, None, exhaustive=True)


def test_affinity_of_a_kept_epoch(study, cli, tmp_path):
    from branchnet.atomic import atomic_torch_save, load_checkpoint
    from branchnet.runs import epoch_checkpoint
    from branchnet.steps.affinity import ModelFeatureSource

    runs, config = study["runs"], study["config_path"]
    seg = runs / "single" / "seg"
    kept = load_checkpoint(epoch_checkpoint(seg, 1))
    final = load_checkpoint(seg / "model.pt")["state_dict"]
    assert all(torch.equal(kept["model"][k], final[k]) for k in final)  # one epoch: the last is the final
    result = cli("affinity", "--config", config, "--runs", runs, "--epoch", "1", "--device", "cpu")
    assert result.code == 0, result.err
    from branchnet.affinity import load_affinity

    np.testing.assert_array_equal(load_affinity(runs / "affinity-epoch1.npz").affinity,
                                  load_affinity(runs / "affinity.npz").affinity)
    assert json.loads((runs / "affinity-epoch1.json").read_text())["settings"]["epoch"] == 1
    # the weights of the epoch are those of epoch<E>.pt, not the final ones
    copy = tmp_path / "runs"
    shutil.copytree(runs / "single", copy / "single")
    changed = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in kept["model"].items()}
    atomic_torch_save(epoch_checkpoint(copy / "single" / "seg", 1), {**kept, "model": changed})
    source = ModelFeatureSource(study["config"], copy, epoch=1)
    loaded = source.load("seg").model.state_dict()
    assert all(torch.equal(loaded[k], changed[k]) for k in changed)
    assert_one_line_error(cli("affinity", "--config", config, "--runs", runs, "--epoch", "2"), "--epoch 2", "1..1")
    atomic_torch_save(epoch_checkpoint(copy / "single" / "seg", 1),
                      {**kept, "fingerprint": {**kept["fingerprint"], "settings": {}}})
    assert_one_line_error(cli("affinity", "--config", config, "--runs", copy, "--epoch", "1"),
                          "other settings", "keep_checkpoints")

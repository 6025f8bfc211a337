"""``branchnet search`` on a tiny run: its files, reuse, resume after a kill, two ranks equal one,
no peeking at evaluate's seeds, ``evaluate --measures learned=R/search``, ``build --cost learned``
and bad input.

One tiny run (three tasks, 32x32, one epoch) is shared: single-task models, RSA and FAFS
affinities, and a search of 4 networks over two budgets in rounds of 2.
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
import torch

from conftest import assert_one_line_error, study_run

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["seg", "depth", "edges"]
OPTIONS = ["--networks", "4", "--batch", "2", "--seeds", "2", "--quiet"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


def _proposals(runs: Path) -> list[dict]:
    return [{k: v for k, v in p.items()} for p in json.loads((runs / "search" / "proposals.json").read_text())["proposals"]]


def _copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source / "single", target / "single")
    for name in os.listdir(source):
        if name.startswith("affinity") and name.endswith((".npz", ".json")):
            shutil.copy(source / name, target / name)
    return target


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_cache):
    from branchnet.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun ranks: the same floats
    root = tmp_path_factory.mktemp("search")
    config, runs, single = study_run(root, data_cache, "[seg, depth, edges]")
    config_path = root / "tiny.yaml"
    stage = single["seg"]["stage_params"]
    heads = sum(single[t]["head_params"][t] for t in TASKS)
    # windows of several trees: 2 groups at every stage, and 2-2-2-3
    budgets = [int(2 * sum(stage) + heads), int(2 * sum(stage[:3]) + 3 * stage[3] + heads)]
    code = main(["search", "--config", str(config_path), "--runs", str(runs), "--budgets",
                 ",".join(map(str, budgets)), *OPTIONS])
    assert code == 0
    torch.set_num_threads(threads)
    return {"config": config, "config_path": config_path, "runs": runs, "budgets": budgets, "single": single}


def _search_args(run, runs: Path | None = None) -> list[str]:
    return ["search", "--config", str(run["config_path"]), "--runs", str(runs or run["runs"]), "--budgets",
            ",".join(map(str, run["budgets"]))]


def test_search_writes_its_files_from_its_own_seeds(run):
    from branchnet.learned import load_model
    from branchnet.study.table import TIMING_COLUMNS
    from branchnet.tree import load_tree

    out = run["runs"] / "search"
    for name in ("trees.csv", "model.json", "proposals.json", "settings.json", "summary.md", "predicted.png"):
        assert (out / name).is_file(), name
    rows = _rows(out / "trees.csv")
    assert len(rows) == 4
    assert {int(r["seed"]) for r in rows} <= {100, 101}
    header = list(rows[0])
    assert header[:8] == ["tree_id", "source", "budget", "seed", "groups", "partitions", "params", "flops"]
    assert header[8:11] == ["dissimilarity_rsa", "dissimilarity_fafs", "dissimilarity_learned"]
    assert header[-3:] == ["delta_mtl_test", "delta_mtl_val", *TIMING_COLUMNS]
    assert {r["source"] for r in rows} == {"search:thompson"}
    model = load_model(out)
    assert len(model.observations) == 4
    record = json.loads((out / "model.json").read_text())
    for budget in run["budgets"]:
        tree = load_tree(out / f"tree-{budget}.json")
        low, high = 0.9 * budget, budget
        assert low <= tree.params <= high
        rec = record["recommended"][str(budget)]
        assert [[sorted(g) for g in p] for p in tree.partitions] == [[sorted(g) for g in p] for p in rec["partitions"]]
        # the recommended tree is the window's best by the posterior mean: no window tree predicts more
        from branchnet.tree.sampling import TreeSpace

        window = TreeSpace(model.tasks, _stage(run), _heads(run), (low, high))
        means, _ = model.predict_delta(window.all())
        assert rec["predicted"] >= means.max() - 1e-9
    # the model's observations are each network's validation changes against the baselines
    single = run["single"]
    for obs in model.observations:
        metrics = json.loads((out / "nets" / obs.tree_id / f"seed{obs.seed}" / "metrics.json").read_text())
        seg = 100 * (metrics["val"]["seg"]["mIoU"] - single["seg"]["val"]["seg"]["mIoU"]) / single["seg"]["val"]["seg"]["mIoU"]
        assert obs.per_task["seg"] == pytest.approx(seg, abs=1e-9)
    diag = record["diagnostics"]
    assert diag["networks"] == 4 and "coverage_delta" in diag
    assert "Recommended trees" in (out / "summary.md").read_text()


def _stage(run):
    return run["single"]["seg"]["stage_params"]


def _heads(run):
    return [run["single"][t]["head_params"][t] for t in TASKS]


def test_rerun_reuses_every_network_and_more_networks_train_only_the_new(run, cli, monkeypatch, tmp_path):
    import branchnet.steps.search as search_step

    runs = _copy_run(run["runs"], tmp_path / "runs")
    shutil.copytree(run["runs"] / "search", runs / "search")
    before = _rows(runs / "search" / "trees.csv")
    calls = []
    real = search_step.train_tree_network
    monkeypatch.setattr(search_step, "train_tree_network", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert cli(*_search_args(run, runs), *OPTIONS).code == 0
    assert calls == []
    assert _rows(runs / "search" / "trees.csv") == before
    torch.set_num_threads(1)
    assert cli(*_search_args(run, runs), "--networks", "5", "--batch", "2", "--seeds", "2", "--quiet").code == 0
    assert len(calls) == 1
    assert len(_rows(runs / "search" / "trees.csv")) == 5
    assert len(_proposals(runs)) == 5


def test_search_never_opens_a_network_of_an_evaluate_seed(run, tmp_path, monkeypatch):
    """A poisoned evaluate network of seed 0 sits in the run; the search reads neither it nor any
    directory outside its own, and trains only with seeds 100 and up."""
    import branchnet.runs as store
    import branchnet.steps.search as search_step

    runs = _copy_run(run["runs"], tmp_path / "runs")
    shutil.copytree(run["runs"] / "search", runs / "search")
    poisoned = runs / "evaluate" / "nets" / "shared" / "seed0"
    poisoned.mkdir(parents=True)
    (poisoned / "run.json").write_text("poison")
    (poisoned / "metrics.json").write_text("poison")
    opened: list[Path] = []
    for name in ("read_record", "read_metrics", "plan_network"):
        real = getattr(store, name)

        def spy(directory, *args, _real=real, **kwargs):
            opened.append(Path(directory))
            return _real(directory, *args, **kwargs)

        monkeypatch.setattr(store, name, spy)
        if hasattr(search_step, name):
            monkeypatch.setattr(search_step, name, spy)
    torch.set_num_threads(1)
    search_step.search(run["config"], runs, budgets=run["budgets"], networks=6, seeds=2, batch=2, quiet=True)
    nets = [p for p in opened if "nets" in p.parts]
    assert nets and all(p.is_relative_to(runs / "search") for p in nets)
    assert all(int(p.name[4:]) >= 100 for p in nets if p.name.startswith("seed"))
    assert not any(p.is_relative_to(runs / "evaluate") for p in opened)


def test_resume_after_a_kill_equals_the_uninterrupted_search(run, tmp_path, monkeypatch):
    import branchnet.steps.search as search_step
    import branchnet.train.engine as engine

    runs = _copy_run(run["runs"], tmp_path / "runs")
    torch.set_num_threads(1)
    calls = {"history": 0}
    real_history = engine.write_history

    def crashing_history(*args, **kwargs):
        calls["history"] += 1
        real_history(*args, **kwargs)
        if calls["history"] == 3:  # the first network of the second round
            raise RuntimeError("killed inside fit")

    with monkeypatch.context() as mp:
        mp.setattr(engine, "write_history", crashing_history)
        with pytest.raises(RuntimeError, match="killed"):
            search_step.search(run["config"], runs, budgets=run["budgets"], networks=4, seeds=2, batch=2, quiet=True)
    assert len(_proposals(runs)) == 4  # the second round was written before it trained
    search_step.search(run["config"], runs, budgets=run["budgets"], networks=4, seeds=2, batch=2, resume=True,
                       quiet=True)
    whole = tmp_path / "whole"
    _copy_run(run["runs"], whole)
    search_step.search(run["config"], whole, budgets=run["budgets"], networks=4, seeds=2, batch=2, quiet=True)
    assert _without_timing(_rows(runs / "search" / "trees.csv")) == _without_timing(_rows(whole / "search" /
                                                                                          "trees.csv"))
    assert _proposals(runs) == _proposals(whole)


def test_two_ranks_search_as_one(run, tmp_path):
    """Two torchrun ranks train each round's two proposals side by side; the search is the
    fixture's, made in one process."""
    runs = _copy_run(run["runs"], tmp_path / "runs")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "BRANCHNET_QUIET": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "branchnet", *_search_args(run, runs), *OPTIONS]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _without_timing(_rows(runs / "search" / "trees.csv")) == _without_timing(_rows(run["runs"] / "search" /
                                                                                          "trees.csv"))
    assert _proposals(runs) == _proposals(run["runs"])


def test_two_jobs_search_as_one(run, cli, tmp_path):
    """``--jobs 2`` trains each round's proposals in two worker processes; the default batch is
    ranks x jobs = 2, so the search is the fixture's (``--batch 2`` in one process)."""
    runs = _copy_run(run["runs"], tmp_path / "runs")
    result = cli(*_search_args(run, runs), "--networks", "4", "--seeds", "2", "--quiet", "--jobs", "2")
    assert result.code == 0, result.err[-3000:]
    assert _without_timing(_rows(runs / "search" / "trees.csv")) == _without_timing(_rows(run["runs"] / "search" /
                                                                                          "trees.csv"))
    assert _proposals(runs) == _proposals(run["runs"])
    assert json.loads((runs / "search" / "model.json").read_text())["search"]["batch"] == 2


def test_evaluate_judges_the_learned_trees_on_other_seeds(run, cli, tmp_path):
    runs = _copy_run(run["runs"], tmp_path / "runs")
    shutil.copytree(run["runs"] / "search", runs / "search")
    torch.set_num_threads(1)
    budget = run["budgets"][0]
    result = cli("evaluate", "--config", run["config_path"], "--runs", runs, "--budgets", budget, "--random", "1",
                 "--seeds", "1", "--measures", f"rsa,learned={runs / 'search'}", "--quiet")
    assert result.code == 0, result.err
    rows = _rows(runs / "evaluate" / "trees.csv")
    assert "dissimilarity_learned" in rows[0]
    learned = [r for r in rows if r["source"] == "learned"]
    record = json.loads((runs / "search" / "model.json").read_text())
    assert [r["tree_id"] for r in learned] == [record["recommended"][str(budget)]["tree_id"]]
    assert {r["seed"] for r in rows} == {"0"}
    summary = json.loads((runs / "evaluate" / "summary.json").read_text())
    assert "learned" in summary["verdict"]
    # the model's dissimilarity is minus its predicted Δ_MTL, up to the intercept
    from branchnet.learned import load_model

    model = load_model(runs / "search")
    parts = [[g.split("+") for g in stage.split("|")] for stage in learned[0]["partitions"].split(" / ")]
    mean, _ = model.predict_delta([parts])
    assert float(learned[0]["dissimilarity_learned"]) == pytest.approx(model.intercept() - mean[0], abs=1e-9)


def test_build_with_the_learned_cost(run, cli, tmp_path):
    runs = run["runs"]
    budget = run["budgets"][1]
    out = tmp_path / "tree.json"
    result = cli("build", "--affinity", runs / "affinity.npz", "--params", budget, "--cost", "learned", "--model",
                 runs / "search" / "model.json", "--window", "--out", out, "--quiet")
    assert result.code == 0, result.err
    built = json.loads(out.read_text())
    searched = json.loads((runs / "search" / f"tree-{budget}.json").read_text())
    assert built["partitions"] == searched["partitions"]


def test_bad_input_is_one_line_and_loses_nothing(run, cli, tmp_path):
    runs, config = run["runs"], run["config_path"]
    out = runs / "search"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    budgets = ",".join(map(str, run["budgets"]))
    cases = [
        (["--networks", "1"], ["--networks 1", "budgets"]),
        (["--budgets", "100K"], ["outside", "all-shared"]),
        (["--set", "train.lr=0.02"], ["other settings", "--force"]),
        (["--seeds", "0"], ["--seeds 0"]),
        (["--acquisition", "best"], ["acquisition", "thompson"]),
        (["--measures", f"learned={out}"], ["cannot be the prior"]),
        (["--batch", "0"], ["--batch 0"]),
    ]
    for extra, fragments in cases:
        args = ["search", "--config", config, "--runs", runs, "--quiet"]
        if "--budgets" not in extra:
            args += ["--budgets", budgets]
        assert_one_line_error(cli(*args, *extra), *fragments)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    empty = tmp_path / "empty"
    assert_one_line_error(cli("search", "--config", config, "--runs", empty, "--budgets", budgets),
                          "train-single")
    assert not (empty / "search").exists()
    no_affinity = tmp_path / "no-affinity"
    shutil.copytree(runs / "single", no_affinity / "single")
    assert_one_line_error(cli("search", "--config", config, "--runs", no_affinity, "--budgets", budgets),
                          "no affinity", "branchnet affinity")
    assert not (no_affinity / "search").exists()
    # a model of another task set, for build and for evaluate
    from branchnet.learned import SharingModel

    other = SharingModel(["seg", "depth", "normals"], ["layer1", "layer2", "layer3", "layer4"])
    bad = tmp_path / "other" / "model.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(other.to_json()))
    assert_one_line_error(cli("build", "--affinity", runs / "affinity.npz", "--params", run["budgets"][0], "--cost",
                              "learned", "--model", bad, "--out", tmp_path / "t.json"), "model of tasks")
    assert not (tmp_path / "t.json").exists()
    assert_one_line_error(cli("evaluate", "--config", config, "--runs", runs, "--budgets", run["budgets"][0],
                              "--random", "1", "--seeds", "1", "--measures", f"learned={bad}"), "tasks")
    assert_one_line_error(cli("evaluate", "--config", config, "--runs", runs, "--budgets", run["budgets"][0],
                              "--random", "1", "--seeds", "102", "--measures", f"learned={out}"),
                          "seed(s) 100", "never used")
    assert_one_line_error(cli("build", "--affinity", runs / "affinity.npz", "--params", run["budgets"][0], "--cost",
                              "learned", "--out", tmp_path / "t.json"), "--model")

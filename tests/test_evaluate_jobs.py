"""``evaluate --jobs N``: the trees of a serial run (every column but ``train_seconds``), a worker
killed with SIGKILL leaving its network unfinished and the others committed, and a rerun that
trains only what is missing; curves.png drawn on demand only.

One tiny run (two tasks, 32x32, one epoch): single-task models, RSA and FAFS affinities, one
budget whose window holds two trees, one random tree, one seed.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from branchnet.config import load_config
from conftest import TINY_CONFIG

#: The tree whose worker is killed in the middle of its training.
VICTIM = "separate"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _without_timing(rows):
    from branchnet.study.table import TIMING_COLUMNS

    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def dying_job(study, job):
    """evaluate's pool job, except that the worker training VICTIM is killed (as ``kill -9``)
    after its epoch's checkpoint is written and before the network is committed."""
    import branchnet.train.engine as engine
    from branchnet.steps.evaluate import train_study_network

    if job.tree_id == VICTIM:
        real = engine.write_history

        def killed(*args, **kwargs):
            real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        engine.write_history = killed
    train_study_network(study, job, quiet=True)
    return 0.0


@pytest.fixture(scope="module")
def base(tmp_path_factory, data_cache):
    """The run before any study: its config, runs directory and the study's budget."""
    from branchnet.steps.affinity import affinity_from_runs, fafs_from_runs
    from branchnet.steps.train_single import train_single

    root = tmp_path_factory.mktemp("evaluate-jobs")
    config_path = root / "tiny.yaml"
    config_path.write_text(TINY_CONFIG.format(root=data_cache, tasks="[seg, depth]").replace("epochs: 2", "epochs: 1"))
    config = load_config(config_path)
    runs = root / "base"
    single = train_single(config, runs, quiet=True)
    affinity_from_runs(config, runs, progress=False, device="cpu")
    fafs_from_runs(config, runs, progress=False, device="cpu")
    stage = single["seg"]["stage_params"]
    heads = single["seg"]["head_params"]["seg"] + single["depth"]["head_params"]["depth"]
    budget = stage[0] + 2 * sum(stage[1:]) + heads  # the tree that shares stage 0 only
    return {"config": config, "runs": runs, "root": root, "options": dict(budgets=[budget], random=1, seeds=1)}


def _copy(base, name: str) -> Path:
    runs = base["root"] / name
    shutil.copytree(base["runs"], runs)
    return runs


@pytest.fixture(scope="module")
def serial(base):
    """The study trained one network at a time in this process, on one thread."""
    from branchnet.steps.evaluate import evaluate

    assert torch.get_num_threads() == 1  # the suite's setting (conftest), as each job's below
    runs = _copy(base, "serial")
    evaluate(base["config"], runs, quiet=True, **base["options"])
    return _rows(runs / "evaluate" / "trees.csv")


def test_a_rerun_with_every_network_reused_keeps_the_report(base, serial):
    import branchnet.train.engine as engine
    from branchnet.steps.evaluate import evaluate

    out = base["root"] / "serial" / "evaluate"
    files = ("trees.csv", "summary.json", "summary.md", "pareto.png")
    before = {name: (out / name).stat().st_mtime_ns for name in files}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "fit", None)  # nothing may train
        summary = evaluate(base["config"], base["root"] / "serial", quiet=True, **base["options"])
        assert {name: (out / name).stat().st_mtime_ns for name in files} == before  # the same report: kept
        assert summary["verdict"] and _rows(out / "trees.csv") == serial
        (out / "pareto.png").unlink()
        evaluate(base["config"], base["root"] / "serial", quiet=True, **base["options"])
    assert (out / "pareto.png").is_file()  # a report not whole is written again


def test_two_jobs_give_the_trees_of_one(base, serial):
    from branchnet.runs import CURVES_FILE
    from branchnet.steps.commit import draw_curves
    from branchnet.steps.evaluate import evaluate

    runs = _copy(base, "jobs")
    evaluate(base["config"], runs, quiet=True, jobs=2, **base["options"])  # 1 free core: 1 thread per job
    assert _without_timing(_rows(runs / "evaluate" / "trees.csv")) == _without_timing(serial)
    nets = sorted((runs / "evaluate" / "nets").glob("*/seed0"))
    assert len(nets) == len({r["tree_id"] for r in serial}) >= 4
    assert all((n / "run.json").is_file() and not (n / CURVES_FILE).exists() for n in nets)  # drawn on demand
    drawn = draw_curves(nets[0])
    assert drawn == nets[0] / CURVES_FILE and drawn.stat().st_size > 10_000


def test_a_killed_job_leaves_its_network_and_a_rerun_trains_only_it(base, serial, monkeypatch, capfd):
    import branchnet.steps.evaluate as ev
    from branchnet.steps.jobs import JobFailed

    runs = _copy(base, "killed")
    monkeypatch.setattr(ev, "_train_job", dying_job)
    with pytest.raises(JobFailed, match=rf"{VICTIM} seed 0 .*did not finish: .*SIGKILL.*run the same command again"):
        ev.evaluate(base["config"], runs, quiet=True, jobs=2, **base["options"])
    monkeypatch.undo()
    nets = runs / "evaluate" / "nets"
    victim = nets / VICTIM / "seed0"
    assert (victim / "checkpoint.pt").is_file() and not (victim / "run.json").exists()  # unfinished
    others = {n: (n / "model.pt").stat().st_mtime_ns for n in nets.glob("*/seed0") if n != victim}
    assert len(others) == len({r["tree_id"] for r in serial}) - 1
    assert all((n / "run.json").is_file() for n in others)  # committed

    monkeypatch.delenv("BRANCHNET_QUIET", raising=False)
    capfd.readouterr()
    ev.evaluate(base["config"], runs, jobs=2, **base["options"])
    err = capfd.readouterr().err
    assert "--jobs 2 but 1 network(s) to train: running 1 at once" in err
    assert "1 to train" in err
    assert (victim / "run.json").is_file()
    assert {n: (n / "model.pt").stat().st_mtime_ns for n in others} == others  # reused, not retrained
    assert _without_timing(_rows(runs / "evaluate" / "trees.csv")) == _without_timing(serial)

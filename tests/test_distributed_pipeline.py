"""The pipeline under torchrun with two gloo CPU processes: `run` writes once and builds the
tree a single process builds, loss weightings stay equal on every rank, and a loss that
diverges on one rank stops every rank with exit 2 (no rank left waiting in a collective)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from branchnet.affinity import load_affinity
from branchnet.config import load_config
from branchnet.model_file import load_model
from branchnet.steps.affinity import affinity_from_runs
from branchnet.steps.build import build_tree
from branchnet.steps.train_single import train_single
from conftest import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("seg", "depth")


def torchrun(args: list[str], cwd: Path, script: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "BRANCHNET_QUIET": "1"}
    target = [str(script)] if script is not None else ["-m", "branchnet"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target, *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache):
    base = tmp_path_factory.mktemp("distributed")
    config = base / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(root=data_cache, tasks="[" + ", ".join(TASKS) + "]"))
    runs = base / "runs"
    train_single(load_config(config), runs, quiet=True)
    return config, runs


WRITE_LOGGER = textwrap.dedent("""
    import os, sys
    log = sys.argv.pop(1)
    real = os.replace
    def logged(src, dst):
        with open(os.path.join(log, "writes-rank%s.txt" % os.environ["RANK"]), "a") as fh:
            fh.write(str(dst) + "\\n")
        return real(src, dst)
    os.replace = logged
    from branchnet.cli import main
    code = main(sys.argv[1:])
    with open(os.path.join(log, "exit-rank%s.txt" % os.environ["RANK"]), "w") as fh:
        fh.write(str(code))
    sys.exit(code)
""")


def test_run_under_torchrun_writes_once_and_builds_the_single_process_tree(trained, tmp_path):
    config, single_runs = trained
    runs = tmp_path / "runs"
    shutil.copytree(single_runs / "single", runs / "single")
    # what one process builds from the same single-task models
    alone = tmp_path / "alone"
    shutil.copytree(single_runs / "single", alone / "single")
    paths = affinity_from_runs(load_config(config), alone, progress=False)
    shared = json.loads((runs / "single" / "seg" / "metrics.json").read_text())
    heads = sum(json.loads((runs / "single" / t / "metrics.json").read_text())["head_params"][t] for t in TASKS)
    budget = sum(shared["stage_params"][:3]) + 2 * shared["stage_params"][3] + heads
    expected = build_tree(load_affinity(paths["npz"]), budget, out=alone / "tree.json").tree

    logs = tmp_path / "logs"
    logs.mkdir()
    script = tmp_path / "logged.py"
    script.write_text(WRITE_LOGGER)
    done = torchrun([str(logs), "run", "--config", str(config), "--runs", str(runs), "--params", str(budget)],
                    ROOT, script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.read_text() for p in sorted(logs.glob("exit-rank*.txt"))] == ["0", "0"]
    assert not (logs / "writes-rank1.txt").exists(), (logs / "writes-rank1.txt").read_text()
    written = (logs / "writes-rank0.txt").read_text().splitlines()
    assert sum(Path(p).name == "report.json" for p in written) == 1
    assert json.loads((runs / "tree.json").read_text())["partitions"] == expected.partitions
    report = json.loads((runs / "report.json").read_text())
    for row in report["networks"][1:]:
        metrics = json.loads((runs / "branched" / row["name"] / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and metrics["delta_mtl"]["baselines"]["matched"]
        loaded = load_model(runs / "branched" / row["name"] / "model.pt")
        assert sum(p.numel() for p in loaded.model.parameters()) == metrics["params"]


RANKS_SCRIPT = textwrap.dedent("""
    import os, sys
    import torch
    from branchnet.cli import main
    from branchnet.config import load_config
    from branchnet.data import build_dataset, build_tasks
    from branchnet.nn import NUM_STAGES, BranchedNet
    from branchnet import distributed
    from branchnet.train.engine import fit
    from branchnet.train.weighting import build_weighting
    from branchnet.tree import shared_partitions
    import branchnet.data

    config_path, out = sys.argv[1], sys.argv[2]
    config = load_config(config_path)
    distributed.init_from_env("cpu")
    rank = distributed.rank()
    tasks = build_tasks(config)
    names = [t.name for t in tasks]
    for name in ("uncertainty", "dwa"):
        torch.manual_seed(0)
        model = BranchedNet(tasks, shared_partitions(names, NUM_STAGES), config.model, config.image_size)
        weighting = build_weighting(name, names)
        splits = [build_dataset(config, s) for s in ("train", "val")]
        fit(model, tasks, config, os.path.join(out, name), *splits, quiet=True, epochs=3, weighting=weighting)
        torch.save({k: v.detach().clone() for k, v in weighting.state_dict().items()},
                   os.path.join(out, f"{name}-rank{rank}.pt"))

    # a loss that becomes NaN on rank 1 only: one image of its first batch is NaN
    real = branchnet.data.build_dataset

    class Poisoned(torch.utils.data.Dataset):
        def __init__(self, inner):
            self.inner = inner
        def __len__(self):
            return len(self.inner)
        def __getitem__(self, index):
            image, targets = self.inner[index]
            return (image * float("nan") if index == POISON else image), targets

    def poisoned(cfg, split, tasks=None):
        data = real(cfg, split, tasks)
        return Poisoned(data) if split == "train" and rank == 1 else data

    from branchnet.train.loaders import epoch_seed
    order = torch.randperm(48, generator=torch.Generator().manual_seed(epoch_seed(config.seed, 0))).tolist()
    POISON = order[1 + 2 * 2]  # rank 1 takes order[1::2]: its third image, in its first batch
    import branchnet.steps.train_branched as step
    step.build_dataset = poisoned
    code = main(["train", "--config", config_path, "--runs", os.path.join(out, "runs"), "--tree", "shared",
                 "--baselines", os.path.join(out, "baselines")])
    with open(os.path.join(out, f"exit-rank{rank}.txt"), "w") as fh:
        fh.write(str(code))
    sys.exit(code)
""")


def test_weightings_agree_across_ranks_and_divergence_stops_every_rank(trained, tmp_path):
    config, single_runs = trained
    out = tmp_path / "out"
    shutil.copytree(single_runs / "single", out / "baselines" / "single")
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    done = torchrun([str(config), str(out)], ROOT, script)
    assert done.returncode != 0  # the poisoned training must fail ...
    assert [p.read_text() for p in sorted(out.glob("exit-rank*.txt"))] == ["2", "2"], done.stderr[-3000:]
    assert "training diverged: the loss of task" in done.stderr and "epoch 1, step 1" in done.stderr
    assert not (out / "runs" / "branched" / "shared" / "model.pt").exists()  # ... and save no model
    for name in ("uncertainty", "dwa"):
        a = torch.load(out / f"{name}-rank0.pt", weights_only=True)
        b = torch.load(out / f"{name}-rank1.pt", weights_only=True)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key, a[key], b[key])
    weights = torch.load(out / "dwa-rank0.pt", weights_only=True)["current"]
    assert not torch.allclose(weights, torch.ones_like(weights))  # DWA moved after 2 epochs
    log_vars = torch.load(out / "uncertainty-rank0.pt", weights_only=True)["log_vars"]
    assert not torch.allclose(log_vars, torch.zeros_like(log_vars))

"""Training under torchrun: two CPU processes with gloo; the checkpoint loads in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from branchnet.model_file import load_model

ROOT = Path(__file__).resolve().parents[1]


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "BRANCHNET_QUIET": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "branchnet", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_train_single_on_two_cpu_processes(tiny_config, tmp_path):
    runs = tmp_path / "runs"
    done = torchrun(["train-single", "--config", str(tiny_config(["seg"])), "--runs", str(runs),
                     "--batch-size", "8"], ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((runs / "single" / "seg" / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and metrics["world_size"] == 2
    assert all(torch.isfinite(torch.tensor(h["train_loss"]["seg"])) for h in metrics["history"])
    # 48 training images, batch 8 per process, 2 processes: 3 steps per epoch
    loaded = load_model(runs / "single" / "seg" / "model.pt")
    assert sum(p.numel() for p in loaded.model.parameters()) == metrics["params"]
    with torch.no_grad():
        out = loaded.model.eval()(torch.zeros(1, 3, 32, 32))
    assert out["seg"].shape == (1, 4, 32, 32)

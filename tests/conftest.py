"""Shared test fixtures: run the CLI in-process and capture what it prints."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("BRANCHNET_QUIET", "1")  # no progress bars in test logs
# The suite runs in parallel processes (pytest-xdist, setup.cfg), one per core: each of them,
# and every process a test starts, computes on one thread. Tiny networks gain nothing from
# more, and threads that outnumber the cores wait for each other.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capfd):
    """Call ``branchnet <args>`` in this process; returns exit code, stdout and stderr."""
    from branchnet.cli import main

    def run(*args: str) -> CliResult:
        capfd.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # pragma: no cover - main() returns codes, never exits
            code = int(exc.code or 0)
        captured = capfd.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """A bad-input failure: exit 2, one line on stderr, no traceback, naming ``fragments``."""
    assert result.code == 2, (result.code, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


TINY_CONFIG = """\
name: tiny
seed: 0
data:
  dataset: scenes
  root: {root}
  image_size: [32, 32]
  splits: {{train: 48, val: 16, test: 16, affinity: 12}}
  options: {{max_objects: 3, workers: 1}}
tasks: {tasks}
model: {{backbone: resnet18, width: 0.125, output_stride: 8, head_channels: 8}}
train: {{epochs: 2, batch_size: 16, lr: 0.01, device: cpu}}
affinity: {{images: 12}}
"""


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """One scenes cache for the whole test session (generation is deterministic)."""
    return tmp_path_factory.mktemp("scenes-cache")


@pytest.fixture
def tiny_config(tmp_path, data_cache):
    """Write a tiny scenes config (32x32 images, a thin ResNet-18) and return its path."""

    def make(tasks=("seg", "depth"), **replace) -> "Path":
        text = TINY_CONFIG.format(root=data_cache, tasks="[" + ", ".join(tasks) + "]")
        for old, new in replace.items():
            text = text.replace(old, new)
        path = tmp_path / "tiny.yaml"
        path.write_text(text)
        return path

    return make


def fresh_runs(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of a module fixture's single-task runs (``trained`` = (config, runs)), so that each
    test writes its own multi-task networks beside them."""
    runs = tmp_path / "runs"
    shutil.copytree(trained[1] / "single", runs / "single")
    return runs


def study_run(root: Path, data_cache: Path, tasks: str, epochs: str = "epochs: 1"):
    """A run for the study tests (evaluate, search): the tiny config with ``tasks`` (YAML list)
    and ``epochs`` (the replacement of the config's ``epochs: 2``), its single-task models and
    its RSA and FAFS affinities, trained on one thread as torchrun ranks are. Returns
    ``(config, runs, single)`` with ``single`` the single-task results (params per stage and head)."""
    from branchnet.config import load_config
    from branchnet.steps.affinity import affinity_from_runs, fafs_from_runs
    from branchnet.steps.train_single import train_single

    config_path = root / "tiny.yaml"
    config_path.write_text(TINY_CONFIG.format(root=data_cache, tasks=tasks).replace("epochs: 2", epochs))
    config = load_config(config_path)
    runs = root / "runs"
    single = train_single(config, runs, quiet=True)
    affinity_from_runs(config, runs, progress=False, device="cpu")
    fafs_from_runs(config, runs, progress=False, device="cpu")
    return config, runs, single


@pytest.fixture(autouse=True)
def _not_quiet_from_an_earlier_test():
    """``--quiet`` holds for the rest of a command (``progress.set_quiet``); every test is a new
    command, so a test that ran a quiet one (or a worker in-process) does not silence the next."""
    from branchnet.progress import set_quiet

    set_quiet(False)
    yield

"""What the error catalogue cannot show with one call: kills and Ctrl-C in the middle of a
training, two processes on one network, leftovers of killed writers, permissions, a full disk,
and ``--quiet``."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import branchnet.atomic as atomic
from branchnet.config import load_config
from branchnet.errors import BadInput
from branchnet.runs import LOCK_FILE, claim_network, plan_network, single_dir, single_fingerprint
from branchnet.steps.train_single import train_single
from conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]


def _default_ctrl_c() -> None:
    # A test runner started in the background by a shell without job control inherits SIGINT
    # ignored, and so would the child; Ctrl-C at a terminal reaches a process that has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def branchnet(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "BRANCHNET_QUIET": "1"}
    return subprocess.Popen([sys.executable, "-m", "branchnet", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_ctrl_c, **kwargs)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    """Until ``path`` exists (the process must still run); a guard, not a timing assertion."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory, data_cache):
    """A 3-epoch tiny config and the metrics of its uninterrupted run (in a subprocess, so that
    every run compared here uses the same threads)."""
    from conftest import TINY_CONFIG

    base = tmp_path_factory.mktemp("resume")
    config = base / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(root=data_cache, tasks="[depth]").replace("epochs: 2", "epochs: 3"))
    process = branchnet("train-single", "--config", str(config), "--runs", str(base / "full"))
    assert process.wait(timeout=600) == 0, process.communicate()
    return config, json.loads((single_dir(base / "full", "depth") / "metrics.json").read_text())


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_killed_or_interrupted_training_resumes_to_the_uninterrupted_result(three_epochs, tmp_path, how):
    config, full = three_epochs
    runs = tmp_path / "runs"
    directory = single_dir(runs, "depth")
    process = branchnet("train-single", "--config", str(config), "--runs", str(runs))
    wait_for(directory / "checkpoint.pt", process)
    process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if how == "interrupt":
        assert process.returncode == 130 and err.strip().splitlines()[-1] == "branchnet: interrupted", err
        assert not (directory / LOCK_FILE).exists()  # released on the way out
    else:
        assert process.returncode == -signal.SIGKILL
        assert (directory / LOCK_FILE).exists()  # a dead holder's lock ...
    assert not (directory / "model.pt").exists() and not (directory / "run.json").exists()
    resume = branchnet("train-single", "--config", str(config), "--runs", str(runs), "--resume")  # ... taken over
    assert resume.wait(timeout=600) == 0, resume.communicate()
    resumed = json.loads((directory / "metrics.json").read_text())
    assert resumed["test"] == full["test"] and resumed["val"] == full["val"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    # the training time covers every epoch, those before the kill too
    assert resumed["train_seconds"] >= sum(h["seconds"] for h in resumed["history"]) - 0.05
    assert not (directory / LOCK_FILE).exists() and not (directory / "checkpoint.pt").exists()
    assert not [p for p in directory.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_a_second_process_on_the_same_network_is_refused_naming_the_holder(tiny_config, tmp_path):
    config = load_config(tiny_config(["seg"]))
    directory = single_dir(tmp_path / "runs", "seg")
    directory.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (directory / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                                       "started": "now", "command": "branchnet train-single"}))
        plan = plan_network(directory, single_fingerprint(config, "seg"), "single/seg")
        with pytest.raises(BadInput, match=f"being trained by process {holder.pid}"):
            with claim_network(plan, "single/seg"):
                pass
        assert (directory / LOCK_FILE).exists()  # the holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()
    with claim_network(plan, "single/seg") as claimed:  # its holder is gone: a stale lock, taken over
        assert claimed.action == "train"
        assert json.loads((directory / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (directory / LOCK_FILE).exists()


def test_the_cli_names_the_holder(cli, tiny_config, tmp_path):
    directory = single_dir(tmp_path / "runs", "seg")
    directory.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (directory / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        result = cli("train-single", "--config", tiny_config(["seg"]), "--runs", tmp_path / "runs")
        assert_one_line_error(result, f"process {holder.pid}", "wait for it")
    finally:
        holder.kill()
        holder.wait()


def test_a_network_finished_meanwhile_is_not_overwritten(tiny_config, tmp_path):
    """Planned as 'train', but another process committed it with other settings before the lock."""
    config = load_config(tiny_config(["seg"]), sets=["train.epochs=1"])
    runs = tmp_path / "runs"
    plan = plan_network(single_dir(runs, "seg"), single_fingerprint(config, "seg"), "single/seg")
    other = load_config(tiny_config(["seg"]), sets=["train.epochs=1", "train.lr=0.05"])
    train_single(other, runs, quiet=True)
    with pytest.raises(BadInput, match="train.lr 0.05 -> 0.01"):
        with claim_network(plan, "single/seg"):
            pass


def test_files_follow_the_umask_and_killed_writers_leave_nothing(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic.atomic_write_json(tmp_path / "a.json", {"x": 1})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        path = atomic.atomic_write_json(tmp_path / "b.json", {"x": 1})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".metrics.{dead.pid}-abcd.tmp.json"
    stale.write_text("{half")
    mine = tmp_path / f".metrics.{os.getpid()}-efgh.tmp.json"
    mine.write_text("{half")
    atomic.atomic_write_json(tmp_path / "metrics.json", {"ok": True})
    assert not stale.exists() and mine.exists()


def test_scenes_cache_directories_follow_the_umask(tmp_path):
    from branchnet.data.scenes import ensure_split

    old = os.umask(0o022)
    try:
        target = ensure_split(str(tmp_path / "cache"), 0, "val", 4, 32, 32, 2, workers=1, quiet=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(BadInput, match=r"could not write metrics\.json into .*: No space left on device; free"):
        atomic.atomic_write_json(tmp_path / "metrics.json", {"x": 1})
    assert list(tmp_path.iterdir()) == []


def test_quiet_prints_nothing(cli, tiny_config, tmp_path, monkeypatch):
    config = tiny_config(["seg"], **{"epochs: 2": "epochs: 1"})
    train_single(load_config(config), tmp_path / "runs", quiet=True)
    monkeypatch.delenv("BRANCHNET_QUIET", raising=False)
    loud = cli("train-single", "--config", config, "--runs", tmp_path / "runs")
    assert loud.code == 0 and "already trained" in loud.err
    quiet = cli("train-single", "--config", config, "--runs", tmp_path / "runs", "-q")
    assert quiet.code == 0 and quiet.err == "" and quiet.out == ""


def test_a_cache_directory_of_another_user_is_one_line(tmp_path, monkeypatch):
    import branchnet.data.scenes as scenes

    (tmp_path / "cache").mkdir()
    real = os.access
    monkeypatch.setattr(scenes.os, "access", lambda path, mode: False if "cache" in str(path) else real(path, mode))
    with pytest.raises(BadInput, match="is not writable .*set data.root or \\$BRANCHNET_CACHE"):
        scenes.ensure_split(str(tmp_path / "cache"), 0, "val", 4, 32, 32, 2, workers=1, quiet=True)
    assert not any(p.name.startswith(".") for p in (tmp_path / "cache").rglob("*"))  # nothing half-made

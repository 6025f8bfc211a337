"""The pool of ``--jobs N`` (branchnet.steps.jobs): parsing, the slots on a CPU, every item run
once in worker processes with their thread budget, and a worker killed with SIGKILL leaving its
item unfinished and the others done."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from branchnet.errors import BadInput
from branchnet.steps.jobs import JobClock, JobFailed, JobSlots, fit_slots, parse_jobs, plan_slots, run_pool


def write_marker(folder: str, item: int) -> dict:
    """A job: write ``<folder>/<item>`` (atomically, as the run store commits) and say where it ran."""
    import torch

    from branchnet.atomic import atomic_write_text

    if item == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` of the worker, mid-job
    if item == 4:
        raise BadInput("item 4 is bad")
    atomic_write_text(Path(folder) / str(item), "done")
    return {"item": item, "pid": os.getpid(), "threads": torch.get_num_threads(),
            "env": os.environ.get("BRANCHNET_THREADS")}


def test_parse_jobs():
    assert parse_jobs(None) == 1 and parse_jobs("3") == 3 and parse_jobs(2) == 2 and parse_jobs("auto") is None
    for bad, fragment in (("0", "--jobs 0"), ("-2", "--jobs -2"), ("two", "not a number")):
        with pytest.raises(BadInput, match=fragment):
            parse_jobs(bad)


def test_slots_on_a_cpu(monkeypatch):
    monkeypatch.setenv("BRANCHNET_THREADS", "4")
    slots = plan_slots("auto", None, "cpu")
    assert slots == JobSlots(2, 2, ("cpu", "cpu"))  # one job per two free cores
    assert plan_slots("3", None, "cpu").threads == 1
    monkeypatch.setenv("BRANCHNET_THREADS", "1")
    assert plan_slots("auto", None, "cpu").jobs == 1  # at least one
    with pytest.raises(BadInput, match="--per-device 2.*CPU"):
        plan_slots("2", 2, "cpu")
    with pytest.raises(BadInput, match="--per-device 0"):
        plan_slots("2", 0, "cpu")
    fitted = fit_slots(JobSlots(4, 1, ("cpu",) * 4), 2)
    assert fitted.jobs == 2 and "--jobs 4 but 2 network(s)" in fitted.notes[0]
    spread = fit_slots(JobSlots(4, 1, ("cuda:0", "cuda:0", "cuda:1", "cuda:1")), 2)
    assert spread.devices == ("cuda:0", "cuda:1")  # one per GPU before two on any


def test_job_clock():
    clock = JobClock([1.0, 1.0, 2.0])
    assert clock.left() is None
    clock.finished(10.0, 0)
    assert clock.left() == pytest.approx(30.0) and clock.left(2) == pytest.approx(15.0)


def test_every_item_runs_once_in_its_own_process(tmp_path):
    done = []
    values = run_pool(write_marker, str(tmp_path), [0, 1, 2, 5], JobSlots(2, 1, ("cpu", "cpu")), quiet=True,
                      on_done=lambda i, v: done.append(i))
    assert [v["item"] for v in values] == [0, 1, 2, 5] and sorted(done) == [0, 1, 2, 3]
    assert {v["pid"] for v in values} - {os.getpid()} == {v["pid"] for v in values}
    assert len({v["pid"] for v in values}) <= 2
    assert all(v["threads"] == 1 and v["env"] == "1" for v in values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2", "5"]


def test_a_killed_worker_leaves_its_item_and_the_others_finish(tmp_path):
    with pytest.raises(JobFailed, match=r"item-3 did not finish: .*SIGKILL.*run the same command again"):
        run_pool(write_marker, str(tmp_path), [0, 1, 3, 2], JobSlots(2, 1, ("cpu", "cpu")), quiet=True,
                 labels=["item-0", "item-1", "item-3", "item-2"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2"]  # the other worker went on
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written file


def test_bad_input_in_a_job_is_one_line(tmp_path):
    with pytest.raises(BadInput, match="item 4 is bad"):
        run_pool(write_marker, str(tmp_path), [4, 0], JobSlots(2, 1, ("cpu", "cpu")), quiet=True)

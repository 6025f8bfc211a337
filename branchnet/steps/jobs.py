"""Several networks at once on one machine: ``--jobs N`` and ``--per-device K`` (docs/evaluate.md,
"Several networks at once").

One pool serves ``evaluate`` and ``search``: N worker processes (the ``spawn`` start method, so
no worker inherits the parent's threads or CUDA state), each with its own thread budget (the
free cores of :func:`branchnet.machine.free_cores` split across the jobs) and, on GPUs, its own
device. The workers take the networks one at a time from a queue, train each through the run
store and commit it there (atomic writes, the record last), so a worker that dies (``kill -9``)
leaves its network unfinished and every other network committed; a rerun trains only what is
missing. The parent shows every running job and the time left (:class:`branchnet.progress.JobsView`)
and reports a dead worker or a failed network once the others are done.

``--jobs 1`` (the default) uses no pool: the commands train in their own process as before.
Under torchrun each rank runs its own pool over its share of the networks.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from branchnet.errors import BadInput

#: Cores per job when ``--jobs auto`` runs on the CPU (one network per two free cores).
CORES_PER_AUTO_JOB = 2

class JobFailed(RuntimeError):
    """A network of the pool did not finish: its worker died or raised. The other networks were
    committed; a rerun of the same command trains what is missing."""


@dataclass(frozen=True)
class JobSlots:
    """How a pool runs: ``jobs`` workers, ``threads`` CPU threads each, worker i on ``devices[i]``
    (``"cpu"`` or ``"cuda:N"``); ``notes`` for the status line."""

    jobs: int
    threads: int
    devices: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def parse_jobs(value: str | int | None) -> int | None:
    """``--jobs``: a positive integer, or ``auto`` (None). :class:`BadInput` for 0, a negative or a
    non-numeric value."""
    if value is None:
        return 1
    text = str(value).strip().lower()
    if text == "auto":
        return None
    try:
        jobs = int(text)
    except ValueError:
        raise BadInput(f"--jobs {value!r} is not a number; give a positive number of networks to train at once "
                       "(e.g. --jobs 2) or --jobs auto") from None
    if jobs < 1:
        raise BadInput(f"--jobs {jobs}: train at least one network at a time; give --jobs 1 or more, or --jobs auto")
    return jobs


def parse_per_device(value: int | None) -> int | None:
    """``--per-device``: a positive integer or None. :class:`BadInput` for 0 or a negative."""
    if value is not None and int(value) < 1:
        raise BadInput(f"--per-device {value}: give one or more networks per GPU (e.g. --per-device 2)")
    return None if value is None else int(value)


def _local_world() -> int:
    """The torchrun processes on this machine (1 outside torchrun): they share its cores."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def plan_slots(jobs: str | int | None, per_device: int | None, device: str) -> JobSlots:
    """The pool for ``--jobs``, ``--per-device`` and the config's ``train.device``; nothing is started.

    On the CPU: ``auto`` is one job per :data:`CORES_PER_AUTO_JOB` free cores (at least one),
    ``--per-device`` is refused. On GPUs: ``auto`` is ``K`` jobs per device (``--per-device K``,
    default 1); worker i runs on device ``i // K``, and more jobs than devices x K is refused.
    The devices are this rank's under torchrun, the one of ``cuda:N``, else every visible GPU.
    Threads per job: the free cores (of this rank's share under torchrun) over the jobs, at least 1.
    ``--jobs 1`` without ``--per-device`` measures nothing: no pool, the command's own threads.
    :class:`BadInput` (one line) for a bad value.
    """
    import torch

    from branchnet.devices import resolve_device
    from branchnet.machine import free_cores

    count = parse_jobs(jobs)
    per = parse_per_device(per_device)
    resolved = resolve_device(device, "train.device")
    if count == 1 and per is None:  # no pool: the command trains in its own process, as before
        return JobSlots(1, max(1, torch.get_num_threads()), (str(resolved),))
    cores = max(1, free_cores(refresh=True) // _local_world())
    if resolved.type == "cpu":
        if per is not None:
            why = f"train.device {device}" + (": no GPU here" if str(device) == "auto" else "")
            raise BadInput(f"--per-device {per} shares a GPU among networks, but this run trains on the CPU ({why}); "
                           "leave --per-device out and give --jobs N or --jobs auto")
        n = count if count is not None else max(1, cores // CORES_PER_AUTO_JOB)
        return JobSlots(n, max(1, cores // n), ("cpu",) * n)
    if "LOCAL_RANK" in os.environ or resolved.index is not None and str(device) not in ("auto", "cuda"):
        devices = [f"cuda:{resolved.index}"]
    else:
        devices = [f"cuda:{i}" for i in range(max(1, torch.cuda.device_count()))]
    if count is None:
        k = per or 1
        n = k * len(devices)
    else:
        n = count
        k = per if per is not None else math.ceil(n / len(devices))
        if n > k * len(devices):
            raise BadInput(f"--jobs {n} with --per-device {k} needs {math.ceil(n / k)} GPU(s), but {len(devices)} "
                           f"{'is' if len(devices) == 1 else 'are'} visible here; give --jobs {k * len(devices)} or "
                           f"--per-device {math.ceil(n / len(devices))}")
    return JobSlots(n, max(1, cores // n), tuple(devices[i // k] for i in range(n)))


def fit_slots(slots: JobSlots, networks: int) -> JobSlots:
    """``slots`` for ``networks`` networks: no more jobs than networks (with a note saying so),
    spread over the devices (one per GPU before two on any)."""
    if slots.jobs <= networks or networks == 0:
        return slots
    note = f"--jobs {slots.jobs} but {networks} network(s) to train: running {networks} at once"
    unique = list(dict.fromkeys(slots.devices))
    devices = tuple(unique[i % len(unique)] for i in range(networks))
    return JobSlots(networks, slots.threads, devices, slots.notes + (note,))


class JobClock:
    """The time left of a list of networks: the seconds per FLOP (or param) of the networks
    finished so far times the weight of those not finished, over the jobs that run at once."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = [max(float(w), 1.0) for w in weights]
        self.done = 0
        self.seconds = 0.0
        self.weight_done = 0.0

    def finished(self, seconds: float, index: int | None = None) -> None:
        """A network took ``seconds`` (``index``: which one; default: the next in order)."""
        self.seconds += seconds
        self.weight_done += self.weights[self.done if index is None else index]
        self.done += 1

    def left(self, parallel: int = 1, running: float = 0.0) -> float | None:
        """Estimated seconds until every network is finished (None before the first), with
        ``parallel`` jobs at once; ``running`` seconds already spent on unfinished ones."""
        if self.done == 0:
            return None
        rate = self.seconds / self.weight_done
        return max(0.0, (rate * (sum(self.weights) - self.weight_done) - running) / max(1, parallel))


def duration(seconds: float | None) -> str:
    """``about 40 s left`` / ``about 12 min left`` (``time left: after the first network`` for None)."""
    if seconds is None:
        return "time left: after the first network"
    minutes = seconds / 60
    return f"about {seconds:.0f} s left" if minutes < 2 else f"about {minutes:.0f} min left"


# ---------------------------------------------------------------------------------
# The worker


def _worker(slot: int, fn: Callable[[Any, Any], Any], shared: Any, conn: Any, threads: int, device: str,
            quiet: bool) -> None:
    """One worker process: its thread budget and device, then the networks the parent sends on
    ``conn`` until it sends None; every event goes back on ``conn`` (a pipe of its own, so a
    worker that dies breaks nothing of the others')."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ["BRANCHNET_THREADS"] = str(threads)
    import torch

    from branchnet import progress
    from branchnet.errors import BadInput as Bad
    from branchnet.machine import thread_limit

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    progress.set_quiet(quiet)
    me = os.getpid()

    def forward(message: dict[str, Any]) -> None:
        if os.getpid() == me:  # not from a data loader's process
            conn.send(("progress", message))

    progress.forward_to(forward)
    with thread_limit(threads):
        while True:
            item = conn.recv()
            if item is None:
                break
            index, payload = item
            conn.send(("start", index))
            started = time.perf_counter()
            try:
                value = fn(shared, payload)
            except Bad as exc:
                conn.send(("bad", index, str(exc)))
            except BaseException:  # a fault: its traceback goes to the parent
                conn.send(("error", index, traceback.format_exc()))
            else:
                conn.send(("done", index, value, time.perf_counter() - started))
    conn.close()


# ---------------------------------------------------------------------------------
# The pool


@dataclass
class _Slot:
    process: Any
    conn: Any
    index: int | None = None  # the item it works on now
    started: float = 0.0
    exited: bool = False


class Pool:
    """``slots.jobs`` worker processes that run ``fn(shared, item)``, kept between calls of
    :meth:`run` (the search trains a round at a time); a context manager that stops them.

    ``fn`` must be a module-level function (the workers import it); ``shared`` is sent to each
    worker once, when it starts.
    """

    def __init__(self, fn: Callable[[Any, Any], Any], shared: Any, slots: JobSlots, *, quiet: bool = False) -> None:
        self.fn, self.shared, self.slots, self.quiet = fn, shared, slots, quiet
        self.workers: list[_Slot] = []

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.close(abort=kind is not None)

    def _start(self) -> None:
        context = mp.get_context("spawn")
        quiet_workers = self.quiet or os.environ.get("BRANCHNET_QUIET") == "1"
        for slot in range(self.slots.jobs):
            mine, theirs = context.Pipe(duplex=True)
            process = context.Process(target=_worker, name=f"branchnet-job-{slot + 1}", daemon=True,
                                      args=(slot, self.fn, self.shared, theirs, self.slots.threads,
                                            self.slots.devices[slot], quiet_workers))
            process.start()
            theirs.close()
            self.workers.append(_Slot(process, mine))

    def close(self, abort: bool = False) -> None:
        """Stop the workers (``abort``: at once, else after their current item)."""
        for worker in self.workers:
            if abort and worker.process.is_alive():
                worker.process.terminate()
            elif not worker.exited:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in self.workers:
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
            worker.conn.close()
        self.workers = []

    def run(self, items: Sequence[Any], *, labels: Sequence[str] | None = None,
            weights: Sequence[float] | None = None, title: str = "networks",
            on_done: Callable[[int, Any], None] | None = None) -> list[Any]:
        """Run every item; returns the values in the order of ``items``.

        The items are handed out in order, one to each idle worker. ``labels`` name them in the
        view, ``weights`` (FLOPs, params) estimate the time left; ``on_done(i, value)`` is called
        in this process as item i finishes. A worker that dies (``kill -9``) leaves its item
        unfinished and the other workers go on with the rest; when ``fn`` raises, no new item
        starts and the running ones finish. Then :class:`JobFailed` names what did not finish
        (:class:`BadInput` when ``fn`` raised one).
        """
        from multiprocessing.connection import wait

        from branchnet.progress import JobsView, say

        items = list(items)
        if not items:
            return []
        if not self.workers:
            self._start()
        labels = list(labels) if labels is not None else [str(i) for i in range(len(items))]
        clock = JobClock(weights if weights is not None else [1.0] * len(items))
        values: dict[int, Any] = {}
        failures: list[tuple[int, str, str]] = []  # (item, kind, message)
        waiting = list(range(len(items)))[::-1]
        parallel = sum(not w.exited for w in self.workers)

        def hand_out(worker: _Slot) -> None:
            """Send the worker its next item (none when every item is out, or after a fault)."""
            worker.index = None
            if not waiting or any(kind != "died" for _, kind, _ in failures):
                return
            index = waiting.pop()
            worker.index, worker.started = index, time.perf_counter()
            try:
                worker.conn.send((index, items[index]))
            except OSError:  # it died meanwhile: its item goes back, the next read says it is gone
                waiting.append(index)
                worker.index = None

        def busy() -> bool:
            return any(w.index is not None for w in self.workers if not w.exited)

        with JobsView(title, len(items), self.quiet) as view:
            view.overall_done(0, duration(None))
            for worker in self.workers:
                if not worker.exited:
                    hand_out(worker)
            while busy():
                live = {w.conn: slot for slot, w in enumerate(self.workers) if not w.exited}
                for conn in wait(list(live), timeout=1.0):
                    slot = live[conn]
                    worker = self.workers[slot]
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):  # the worker is gone
                        worker.process.join(timeout=5)
                        worker.exited = True
                        view.finished(slot)
                        if worker.index is not None:
                            failures.append((worker.index, "died", _death(worker.process)))
                            worker.index = None
                        continue
                    kind = message[0]
                    if kind == "start":
                        view.started(slot, labels[message[1]])
                    elif kind == "progress":
                        if "say" in message[1]:
                            say(message[1]["say"])
                        elif not message[1].get("done"):
                            view.step(slot, message[1]["description"], message[1]["completed"],
                                      message[1]["total"])
                    elif kind == "done":
                        index, value, seconds = message[1:]
                        values[index] = value
                        clock.finished(seconds, index)
                        view.finished(slot)
                        if on_done is not None:
                            on_done(index, value)
                        hand_out(worker)
                    elif kind in ("bad", "error"):
                        failures.append((message[1], kind, message[2]))
                        view.finished(slot)
                        hand_out(worker)
                    view.overall_done(len(values), _left(clock, self.workers, parallel))
                if waiting and not busy() and not any(k != "died" for _, k, _ in failures):
                    for worker in self.workers:  # a worker died with items left: the others take them
                        if not worker.exited and worker.index is None:
                            hand_out(worker)
        if failures:
            _raise(failures, labels, len(items) - len(values))
        missing = [labels[i] for i in range(len(items)) if i not in values]
        if missing:  # every worker died before the last item
            raise JobFailed(f"{len(missing)} network(s) did not start ({', '.join(missing[:5])}): every worker "
                            "stopped; run the same command again to train what is missing")
        return [values[i] for i in range(len(items))]


def run_pool(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any], slots: JobSlots, *,
             labels: Sequence[str] | None = None, weights: Sequence[float] | None = None, title: str = "networks",
             quiet: bool = False, on_done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """:meth:`Pool.run` of a pool of ``min(slots.jobs, len(items))`` workers made for these items
    alone (see :class:`Pool`)."""
    if not items:
        return []
    fitted = JobSlots(min(slots.jobs, len(items)), slots.threads, slots.devices[:len(items)], slots.notes)
    with Pool(fn, shared, fitted, quiet=quiet) as pool:
        return pool.run(items, labels=labels, weights=weights, title=title, on_done=on_done)


def _left(clock: JobClock, workers: list[_Slot], parallel: int) -> str:
    now = time.perf_counter()
    running = sum(now - w.started for w in workers if w.index is not None)
    return duration(clock.left(parallel, running))


def _death(process: Any) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"its worker process {process.pid} was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"its worker process {process.pid} was killed by signal {-code}"
    return f"its worker process {process.pid} ended with exit status {code}"


def _raise(failures: list[tuple[int, str, str]], labels: Sequence[str], unfinished: int) -> None:
    index, kind, message = failures[0]
    if kind == "bad":
        raise BadInput(message)
    others = f" ({unfinished} network(s) unfinished in all)" if unfinished > 1 else ""
    if kind == "died":
        raise JobFailed(f"{labels[index]} did not finish: {message}{others}; the other networks are committed, "
                        "run the same command again to train what is missing")
    raise JobFailed(f"{labels[index]} failed{others}; the other networks are committed. Its worker said:\n{message}")

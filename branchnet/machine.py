"""What this machine has to offer: the CPU cores this process may use and how many are free
right now, and the free memory (steps check it before they allocate).

Thread pools are sized from what is free, not from what the machine has: on a shared
machine a multi-threaded product whose threads share a core with another process waits
for its slowest thread (docs/performance.md, "The CPU path on a shared machine").
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch

#: Seconds over which :func:`free_cores` samples the machine's CPU time.
SAMPLE_SECONDS = 0.05
#: A measurement of :func:`free_cores` is reused for this many seconds.
REUSE_SECONDS = 10.0

_last: tuple[float, int] | None = None


def usable_cores() -> int:
    """The CPU cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_lines() -> dict[str, list[int]]:
    with open("/proc/stat") as fh:
        return {parts[0]: [int(v) for v in parts[1:]] for parts in (line.split() for line in fh)
                if parts and parts[0].startswith("cpu") and parts[0] != "cpu"}


def _own_ticks() -> int:
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


def busy_elsewhere(seconds: float = SAMPLE_SECONDS) -> float | None:
    """Cores of this process's CPU set kept busy by other processes over ``seconds`` (None off Linux).

    Busy time of the allowed CPUs (``/proc/stat``) minus this process's own CPU time.
    """
    try:
        allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        before, own_before, t0 = _cpu_lines(), _own_ticks(), time.perf_counter()
        time.sleep(seconds)
        after, own_after, t1 = _cpu_lines(), _own_ticks(), time.perf_counter()
    except (OSError, AttributeError, ValueError, IndexError):
        return None
    busy = total = 0
    for name in allowed & set(before) & set(after):
        delta = [b - a for a, b in zip(before[name], after[name])]
        idle = delta[3] + (delta[4] if len(delta) > 4 else 0)  # idle + iowait
        total += sum(delta[:8])  # guest time is already counted in user time
        busy += sum(delta[:8]) - idle
    if total <= 0:
        return None
    cores = len(allowed & set(before))
    busy_cores = cores * busy / total - (own_after - own_before) / max(t1 - t0, 1e-9) / os.sysconf("SC_CLK_TCK")
    return max(0.0, busy_cores)


def free_cores(refresh: bool = False) -> int:
    """Threads worth running now: the usable cores less those other processes keep busy
    (rounded, at least 1), capped by ``torch.get_num_threads()`` (the user's limit).

    Measured over :data:`SAMPLE_SECONDS` and reused for :data:`REUSE_SECONDS`
    (``refresh`` measures again). ``BRANCHNET_THREADS`` in the environment fixes the number.
    """
    global _last
    fixed = os.environ.get("BRANCHNET_THREADS")
    limit = max(1, torch.get_num_threads())
    if fixed:
        try:
            return max(1, int(fixed))
        except ValueError:
            pass
    now = time.monotonic()
    if not refresh and _last is not None and now - _last[0] < REUSE_SECONDS:
        return min(_last[1], limit)
    busy = busy_elsewhere()
    cores = usable_cores()
    free = cores if busy is None else max(1, int(round(cores - busy)))
    _last = (now, free)
    return min(free, limit)


@contextlib.contextmanager
def thread_limit(threads: int) -> Iterator[int]:
    """Run the block with at most ``threads`` threads in torch's pool and in numpy's BLAS.

    One pool at a time: torch's intra-op pool and BLAS are both capped, so that no pool
    runs on top of another with more threads than there are free cores.
    """
    threads = max(1, int(threads))
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, threads))
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield threads
    finally:
        torch.set_num_threads(previous)


def available_ram() -> int:
    """Available RAM in bytes (``MemAvailable`` in /proc/meminfo, else the free pages by ``os.sysconf``)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


def available_memory(device: "torch.device | str" = "cpu") -> int:
    """Bytes free for new tensors on ``device``: :func:`available_ram` on the CPU, the GPU's free
    memory (``torch.cuda.mem_get_info``) on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return available_ram()


def check_memory(need: int, what: str, advice: str, device: "torch.device | str" = "cpu") -> None:
    """The one memory check (docs/design.md, "Errors"): :class:`~branchnet.errors.BadInput` when
    ``need`` bytes (an estimate made before anything is allocated) exceed what ``device`` has free,
    saying ``what`` needs about how much, how much is free, and ``advice`` (what to lower)."""
    from branchnet.errors import BadInput

    free = available_memory(device)
    if need > free:
        where = "" if torch.device(device).type == "cpu" else f" on {device}"
        raise BadInput(f"{what} needs about {_gib(need)} but only {_gib(free)} are free{where}; {advice}")


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count < 2**50 else f"{count / 2**40:.3g} TiB"

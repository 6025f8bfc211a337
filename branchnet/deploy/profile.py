"""Measured latency and memory of branched networks: per encoder node, per head, end to end.

Timing (:func:`time_calls`): every call is run ``warmup`` times, then ``repeats`` rounds
in which each call runs once, in turn (round robin), so slow drifts of the machine (other
processes, clocks) fall on every call alike and ratios measured in the same run are fair.
Each sample is ``time.perf_counter`` around one call, with ``torch.cuda.synchronize``
before and after it on CUDA. A :class:`Timing` is the median of the samples and their
spread (interquartile range), in seconds. Runs in evaluation mode under
``torch.inference_mode``.

A network's profile (:func:`profile_networks`) times each encoder node on its real input
(the output of its parent, computed once), each head on its leaf's features, and the whole
forward pass. The sum of the node and head medians is the *latency model* that
``branchnet build --latency`` budgets with (docs/deploy.md, "Latency budgets"); the
end-to-end median is the real thing; their ratio is reported, never assumed.

Memory peak (:func:`memory_peak`): the weights (parameters and buffers) plus the largest
number of bytes that tensors created by the forward pass hold at one time. On CUDA the
latter is the caching allocator's peak above what was allocated before the pass
(``torch.cuda.max_memory_allocated``); on the CPU it is counted by :class:`LiveBytes`, a
``TorchDispatchMode`` that adds each new storage an operator returns and subtracts it when
the last tensor using it is freed (kernel-internal scratch space is not seen).
"""

from __future__ import annotations

import os
import platform
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from branchnet.nn.branched import BranchedNet

#: Default rounds of timing and of warm-up.
REPEATS = 20
WARMUP = 3


@dataclass(frozen=True)
class Timing:
    """Median and spread (interquartile range) of ``samples`` durations, in seconds."""

    median: float
    p25: float
    p75: float
    samples: int

    @property
    def spread(self) -> float:
        return self.p75 - self.p25

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Timing":
        values = np.asarray(seconds, dtype=np.float64)
        p25, median, p75 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(p25), float(p75), int(values.size))

    def to_json(self) -> dict[str, float | int]:
        return {"median_s": self.median, "p25_s": self.p25, "p75_s": self.p75, "spread_s": self.spread,
                "samples": self.samples}


def device_name(device: torch.device) -> str:
    """A readable name of the device: the GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for the device's queued work: ``torch.cuda.synchronize`` on CUDA, nothing on the CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_calls(calls: Mapping[str, Callable[[], Any]], device: torch.device, repeats: int = REPEATS,
               warmup: int = WARMUP) -> dict[str, Timing]:
    """Time every call ``repeats`` times, round robin, after ``warmup`` rounds; ``{name: Timing}``."""
    sync = synchronizer(device)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for _ in range(warmup):
            for call in calls.values():
                call()
        sync()
        for _ in range(repeats):
            for name, call in calls.items():
                sync()
                start = time.perf_counter()
                call()
                sync()
                samples[name].append(time.perf_counter() - start)
    return {name: Timing.of(values) for name, values in samples.items()}


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages that operators create and that are still alive.

    ``peak`` is the largest total seen. Storages of tensors that existed before (weights,
    inputs: pass them as ``external``) are never counted; a view shares its base's
    storage and is counted once; a storage leaves the count when the last tensor on it
    is freed.
    """

    def __init__(self, external: Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        self.external = {self._key(t) for t in external}
        self.storages: dict[int, list[int]] = {}  # storage key -> [bytes, live tensors]
        self.tensors: set[int] = set()  # ids of the tensors counted (alive)
        self.current = 0
        self.peak = 0

    @staticmethod
    def _key(t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr()

    def _release(self, tensor_id: int, key: int) -> None:
        self.tensors.discard(tensor_id)
        entry = self.storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or id(t) in self.tensors:
                continue
            key = self._key(t)
            if key == 0 or key in self.external:
                continue
            entry = self.storages.get(key)
            if entry is None:
                entry = self.storages[key] = [int(t.untyped_storage().nbytes()), 0]
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            self.tensors.add(id(t))
            weakref.finalize(t, self._release, id(t), key)
        return out


def weight_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    return int(sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers())))


def memory_peak(net: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """``{"weights_bytes", "activations_bytes", "peak_bytes"}`` of one forward pass of ``net`` on ``x``
    (module docstring: the CUDA allocator's peak, or :class:`LiveBytes` on the CPU)."""
    weights = weight_bytes(net)
    with torch.inference_mode():
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
            torch.cuda.reset_peak_memory_stats(x.device)
            before = torch.cuda.memory_allocated(x.device)
            out = net(x)
            torch.cuda.synchronize(x.device)
            activations = int(torch.cuda.max_memory_allocated(x.device) - before)
            del out
        else:
            tracker = LiveBytes(list(net.parameters()) + list(net.buffers()) + [x])
            with tracker:
                out = net(x)
                del out
            activations = int(tracker.peak)
    return {"weights_bytes": weights, "activations_bytes": activations, "peak_bytes": weights + activations}


@dataclass
class PartTiming:
    """One timed part of a network: an encoder node (``kind="node"``) or a head (``"head"``)."""

    kind: str
    name: str  # node key (s<d>_g<j>) or task
    stage: int | None  # the node's stage d (None for a head)
    location: str
    tasks: list[str]
    timing: Timing

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "stage": self.stage, "location": self.location,
                "tasks": self.tasks, **self.timing.to_json()}


@dataclass
class NetworkProfile:
    """The measured latency and memory of one network at one batch size."""

    name: str
    partitions: list
    batch: int
    params: int
    parts: list[PartTiming]
    end_to_end: Timing
    memory: dict[str, int] = field(default_factory=dict)

    @property
    def parts_sum(self) -> float:
        """Sum of the node and head medians: the latency model, in seconds."""
        return float(sum(p.timing.median for p in self.parts))

    @property
    def model_ratio(self) -> float:
        """``parts_sum / end-to-end median``: how well summed parts predict the whole."""
        return self.parts_sum / self.end_to_end.median if self.end_to_end.median > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "partitions": self.partitions, "batch": self.batch, "params": self.params,
                "end_to_end": self.end_to_end.to_json(), "parts_sum_s": self.parts_sum,
                "parts_sum_over_end_to_end": self.model_ratio, "memory": self.memory,
                "parts": [p.to_json() for p in self.parts]}


def _part_calls(net: BranchedNet, x: torch.Tensor) -> tuple[dict[str, Callable[[], Any]], list[dict[str, Any]]]:
    """A call per node (on its parent's real output) and per head (on its leaf's features)."""
    with torch.inference_mode():
        levels = net.forward_levels(x)
    size = tuple(x.shape[-2:])
    calls: dict[str, Callable[[], Any]] = {}
    info: list[dict[str, Any]] = []
    for d, partition in enumerate(net.partitions):
        for j, group in enumerate(partition):
            key = net.node_key(d, j)
            parent = net.parents[d][j]
            inputs = x if parent < 0 else levels[d - 1][parent]
            calls[key] = (lambda node, inp: lambda: node(inp))(net.nodes[key], inputs)
            info.append({"kind": "node", "name": key, "stage": d, "location": net.layout.locations[d],
                         "tasks": list(group)})
    for t in net.task_names:
        feats = levels[-1][net.leaf[t]]
        calls[f"head:{t}"] = (lambda head, f: lambda: head(f, size))(net.heads[t], feats)
        info.append({"kind": "head", "name": t, "stage": None, "location": "head", "tasks": [t]})
    return calls, info


def profile_networks(nets: Mapping[str, BranchedNet], device: torch.device, batch: int,
                     input_size: tuple[int, int], repeats: int = REPEATS, warmup: int = WARMUP,
                     seed: int = 0, memory: bool = True) -> dict[str, NetworkProfile]:
    """Profile every network of ``nets`` at ``batch`` images of ``input_size`` on ``device``.

    All parts and end-to-end passes of all networks are timed together, round robin
    (:func:`time_calls`), so their ratios come from the same conditions. Networks are
    moved to ``device`` and put in evaluation mode. Returns ``{name: NetworkProfile}``.
    """
    x = torch.randn(batch, 3, *input_size, generator=torch.Generator().manual_seed(seed)).to(device)
    calls: dict[str, Callable[[], Any]] = {}
    infos: dict[str, list[dict[str, Any]]] = {}
    for name, net in nets.items():
        net.to(device).eval()
        parts, info = _part_calls(net, x)
        infos[name] = info
        calls.update({f"{name}/{key}": call for key, call in parts.items()})
        calls[f"{name}/end-to-end"] = (lambda n: lambda: n(x))(net)
    timings = time_calls(calls, device, repeats, warmup)
    out = {}
    for name, net in nets.items():
        keys = [key for key in calls if key.startswith(f"{name}/") and key != f"{name}/end-to-end"]
        parts = [PartTiming(timing=timings[key], **item) for key, item in zip(keys, infos[name])]
        out[name] = NetworkProfile(name=name, partitions=net.partitions, batch=batch,
                                   params=sum(p.numel() for p in net.parameters()), parts=parts,
                                   end_to_end=timings[f"{name}/end-to-end"],
                                   memory=memory_peak(net, x) if memory else {})
    return out


@dataclass
class LatencyTable:
    """Measured seconds of one copy of each encoder stage and of each head (medians).

    What ``branchnet build --latency`` budgets with: a tree's modelled latency is
    ``sum_d k_d * stage[d] + sum_t head[t]``, like its FLOPs.
    """

    device: str
    device_type: str
    batch: int
    input_size: tuple[int, int]
    locations: list[str]
    tasks: list[str]
    stage: list[float]
    head: list[float]
    stage_spread: list[float]
    head_spread: list[float]
    repeats: int
    warmup: int
    threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    def predict(self, partitions: Sequence[Sequence[Sequence[str]]]) -> float:
        """The modelled latency (seconds) of a tree with ``partitions``."""
        return float(sum(len(p) * s for p, s in zip(partitions, self.stage)) + sum(self.head))

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "device_type": self.device_type, "batch": self.batch,
                "input_size": list(self.input_size), "locations": self.locations, "tasks": self.tasks,
                "stage_latency_s": self.stage, "head_latency_s": self.head,
                "stage_spread_s": self.stage_spread, "head_spread_s": self.head_spread,
                "repeats": self.repeats, "warmup": self.warmup, "threads": self.threads, **self.extra}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "LatencyTable":
        known = {"device", "device_type", "batch", "input_size", "locations", "tasks", "stage_latency_s",
                 "head_latency_s", "stage_spread_s", "head_spread_s", "repeats", "warmup", "threads"}
        return cls(device=str(obj["device"]), device_type=str(obj["device_type"]), batch=int(obj["batch"]),
                   input_size=(int(obj["input_size"][0]), int(obj["input_size"][1])),
                   locations=list(obj["locations"]), tasks=list(obj["tasks"]),
                   stage=[float(v) for v in obj["stage_latency_s"]], head=[float(v) for v in obj["head_latency_s"]],
                   stage_spread=[float(v) for v in obj["stage_spread_s"]],
                   head_spread=[float(v) for v in obj["head_spread_s"]], repeats=int(obj["repeats"]),
                   warmup=int(obj["warmup"]), threads=int(obj["threads"]),
                   extra={k: v for k, v in obj.items() if k not in known})


def measure_latency_table(net: BranchedNet, device: torch.device, batch: int, repeats: int = REPEATS,
                          warmup: int = WARMUP) -> LatencyTable:
    """The :class:`LatencyTable` of ``net``'s stages and heads (``net`` is normally the
    all-shared network: one copy of each stage), measured on ``device`` at ``batch``."""
    profile = profile_networks({"table": net}, device, batch, tuple(net.image_size), repeats, warmup,
                               memory=False)["table"]
    stage: list[list[Timing]] = [[] for _ in range(net.num_stages)]
    for part in profile.parts:
        if part.kind == "node":
            stage[part.stage].append(part.timing)
    heads = {p.name: p.timing for p in profile.parts if p.kind == "head"}
    return LatencyTable(
        device=device_name(device), device_type=device.type, batch=batch, input_size=tuple(net.image_size),
        locations=list(net.layout.locations), tasks=list(net.task_names),
        stage=[float(np.median([t.median for t in s])) for s in stage],
        stage_spread=[float(np.median([t.spread for t in s])) for s in stage],
        head=[heads[t].median for t in net.task_names], head_spread=[heads[t].spread for t in net.task_names],
        repeats=repeats, warmup=warmup, threads=torch.get_num_threads(),
        extra={"end_to_end_s": profile.end_to_end.median, "torch": torch.__version__,
               "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None})


def measure_end_to_end(net: BranchedNet, device: torch.device, batch: int, repeats: int = REPEATS,
                       warmup: int = WARMUP, seed: int = 0) -> Timing:
    """The end-to-end latency of ``net`` (one forward pass of ``batch`` images)."""
    x = torch.randn(batch, 3, *net.image_size, generator=torch.Generator().manual_seed(seed)).to(device)
    net.to(device).eval()
    return time_calls({"net": lambda: net(x)}, device, repeats, warmup)["net"]

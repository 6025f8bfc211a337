"""The ``branchnet profile`` step: how fast a tree runs, beside the all-shared and all-separate networks.

:func:`profile` takes a trained ``model.pt`` (its weights, config and tree) or a
``tree.json`` with a config (random weights: latency does not depend on the weights'
values, so a tree can be profiled before it is trained). It builds the all-shared and
all-separate networks of the same tasks, encoder and heads, and times all three together
on one device for each batch size (:func:`branchnet.deploy.profile.profile_networks`:
every encoder node, every head and the whole pass; median and spread after warm-up;
round robin so the ratios are fair), with each network's memory peak. The figures go to
``<stem>.profile-<device>.json`` and ``.png`` beside the input
(:func:`branchnet.runs.profile_path`) and are printed as rich tables.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from branchnet.config import Config, ModelConfig
from branchnet.deploy.profile import REPEATS, WARMUP, NetworkProfile
from branchnet.errors import BadInput
from branchnet.tasks import Task

NETWORKS = ("tree", "all-shared", "all-separate")


def tasks_of(config: Config, names: Sequence[str], source: str) -> list[Task]:
    """The typed tasks ``names`` of ``config``; :class:`BadInput` naming those it lacks."""
    from branchnet.data import build_tasks

    by_name = {t.name: t for t in build_tasks(config)}
    missing = [t for t in names if t not in by_name]
    if missing:
        raise BadInput(f"task(s) {', '.join(missing)} of {source} are not in config {config.source} "
                       f"(it has {', '.join(by_name)}); use the config the tree was built from")
    return [by_name[t] for t in names]


def parse_batches(text: str | Sequence[int] | None) -> list[int]:
    """``"1,8"`` -> [1, 8]; :class:`BadInput` for anything but positive integers."""
    if text is None:
        return [1]
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            value = int(str(item).strip())
        except ValueError:
            value = 0
        if value < 1 or str(item).strip() != str(value):
            raise BadInput(f"--batch '{text}' must be positive whole numbers separated by commas (e.g. 1,8)")
        out.append(value)
    return list(dict.fromkeys(out))


@dataclass
class ProfileReport:
    """The measured networks per batch size, and where they were written."""

    source: Path
    kind: str  # "model" (trained weights) or "tree" (random weights)
    device: str
    device_type: str
    threads: int
    input_size: tuple[int, int]
    repeats: int
    warmup: int
    profiles: dict[int, dict[str, NetworkProfile]]
    loadavg: list[float] | None
    notes: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def ratio(self, batch: int, a: str, b: str) -> float:
        """End-to-end median of network ``a`` over that of ``b`` at ``batch``."""
        pa, pb = self.profiles[batch][a], self.profiles[batch][b]
        return pa.end_to_end.median / pb.end_to_end.median

    def to_json(self) -> dict[str, Any]:
        return {"format": "branchnet.profile/1", "source": str(self.source), "kind": self.kind,
                "device": self.device, "device_type": self.device_type, "threads": self.threads,
                "input_size": list(self.input_size), "repeats": self.repeats, "warmup": self.warmup,
                "loadavg": self.loadavg, "notes": self.notes,
                "batches": {str(b): {"networks": {n: p.to_json() for n, p in nets.items()},
                                     "tree_over_all_shared": self.ratio(b, "tree", "all-shared"),
                                     "tree_over_all_separate": self.ratio(b, "tree", "all-separate")}
                            for b, nets in self.profiles.items()}}

    def print(self, console: Any = None) -> None:
        """The networks' table and the tree's per-part table (rich, stdout)."""
        from rich.console import Console
        from rich.table import Table

        from branchnet.units import format_count, format_latency

        if console is None:
            console = Console(highlight=False)
            if not console.is_terminal:  # files and pipes: wide enough for the tables
                console = Console(highlight=False, width=120)
        load = f", load average {self.loadavg[0]:.2f}" if self.loadavg else ""
        console.print(f"{self.source} ({'trained weights' if self.kind == 'model' else 'random weights'}) on "
                      f"{self.device_type}: {self.device}, {self.threads} threads, input "
                      f"{self.input_size[0]}x{self.input_size[1]}, median of {self.repeats} after "
                      f"{self.warmup} warm-up{load}")
        table = Table(title="end to end: median ± half the interquartile range")
        for name in ("batch", "network", "groups", "params", "end to end", "sum of parts", "parts/whole",
                     "memory peak", "vs all-separate"):
            table.add_column(name, justify="left" if name in ("network", "groups") else "right")
        for batch, nets in self.profiles.items():
            for name in NETWORKS:
                p = nets[name]
                table.add_row(str(batch), name, ",".join(str(len(g)) for g in p.partitions), format_count(p.params),
                              f"{format_latency(p.end_to_end.median)} ± {format_latency(p.end_to_end.spread / 2)}",
                              format_latency(p.parts_sum), f"{p.model_ratio:.2f}",
                              _bytes(p.memory.get("peak_bytes")), f"{self.ratio(batch, name, 'all-separate'):.2f}x")
        console.print(table)
        parts = Table(title="the tree, part by part: median ± half the interquartile range")
        parts.add_column("part")
        parts.add_column("tasks")
        for batch in self.profiles:
            parts.add_column(f"batch {batch}", justify="right")
        first = next(iter(self.profiles.values()))["tree"].parts
        for i, part in enumerate(first):
            label = f"{part.location} {part.name}" if part.kind == "node" else f"head {part.name}"
            cells = []
            for nets in self.profiles.values():
                timing = nets["tree"].parts[i].timing
                cells.append(f"{format_latency(timing.median)} ± {format_latency(timing.spread / 2)}")
            parts.add_row(label, ", ".join(part.tasks), *cells)
        console.print(parts)
        for note in self.notes:
            console.print(f"note: {note}")


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def _networks(tasks: list[Task], partitions: list, model: ModelConfig, size: tuple[int, int], seed: int):
    """(all-shared, all-separate) networks of ``tasks`` with random weights."""
    import torch

    from branchnet.nn.backbones import NUM_STAGES
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import separate_partitions, shared_partitions

    names = [t.name for t in tasks]
    depth = len(partitions) if partitions else NUM_STAGES
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shared = BranchedNet(tasks, shared_partitions(names, depth), model, size)
        separate = BranchedNet(tasks, separate_partitions(names, depth), model, size)
    return shared, separate


def load_network(source: str | os.PathLike, config: Config | None = None,
                 input_size: tuple[int, int] | None = None):
    """(the network, its config's model section, tasks, size, kind, seed, notes) of a model.pt, or of a
    tree.json with ``config`` (the one the command resolved; a model.pt carries its own)."""
    import torch

    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import load_tree

    path = Path(source)
    notes: list[str] = []
    if path.suffix == ".json":
        if config is None:
            raise BadInput(f"profiling {path} builds its network with random weights and needs --config CFG for "
                           "the task heads (e.g. --config configs/scenes.yaml)")
        cfg = config
        tree = load_tree(path)
        tasks = tasks_of(cfg, tree.tasks, f"tree {path}")
        model = cfg.model
        if tree.backbone and tree.backbone != model.backbone:
            model = dataclasses.replace(model, backbone=tree.backbone)
            notes.append(f"the tree was built for {tree.backbone}, the config uses {cfg.model.backbone}: "
                         f"profiling {tree.backbone}")
        size = tuple(input_size) if input_size else cfg.image_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = BranchedNet(tasks, tree.partitions, model, size)
        return net, model, tasks, size, "tree", cfg.seed, notes
    if config is not None:
        raise BadInput(f"--config is for a tree.json; {path} is a model file and carries its own config "
                       "(drop --config)")
    from branchnet.steps.predict import load_for_prediction

    loaded = load_for_prediction(path)
    size = tuple(input_size) if input_size else tuple(loaded.model.image_size)
    notes.append(f"{loaded.kind} network with its trained weights; the all-shared and all-separate networks "
                 "have random weights (latency does not depend on their values)")
    return loaded.model, loaded.config.model, loaded.tasks, size, "model", loaded.config.seed, notes


def profile(source: str | os.PathLike, config: Config | None = None, device: str = "cpu",
            batches: Sequence[int] | str | None = None, repeats: int = REPEATS, warmup: int = WARMUP,
            input_size: tuple[int, int] | None = None, out: str | os.PathLike | None = None,
            write: bool = True, plot: bool = True) -> ProfileReport:
    """Profile ``source`` (a model.pt, or a tree.json with ``config``) beside the all-shared and
    all-separate networks, on ``device`` (cpu, cuda, cuda:N), at each of ``batches``.

    Writes ``out`` (default :func:`branchnet.runs.profile_path`) and a plot beside it when
    ``write``. Raises :class:`BadInput` (nothing written) for a file that is not a model
    or a tree, a missing config, no CUDA for ``cuda``, bad batches, repeats or sizes.
    """
    import torch

    from branchnet.deploy.profile import device_name, profile_networks
    from branchnet.runs import profile_path
    from branchnet.devices import resolve_device

    dev = resolve_device(device, "--device")
    sizes = parse_batches(batches)
    if repeats < 1 or warmup < 0:
        raise BadInput(f"--repeats {repeats} must be at least 1 and --warmup {warmup} at least 0")
    if input_size is not None and (len(input_size) != 2 or min(input_size) < 16):
        raise BadInput(f"--input-size {' '.join(map(str, input_size))} must be two sizes H W of at least 16 pixels")
    net, model, tasks, size, kind, seed, notes = load_network(source, config, input_size)
    shared, separate = _networks(tasks, net.partitions, model, size, seed)
    nets = {"tree": net, "all-shared": shared, "all-separate": separate}
    from branchnet.machine import check_memory
    from branchnet.nn.memory import forward_bytes

    check_memory(max(forward_bytes(n, max(sizes), size) for n in nets.values()),
                 f"profiling a batch of {max(sizes)} images of {size[0]}x{size[1]}", "lower --batch or --input-size",
                 dev)
    profiles = {b: profile_networks(nets, dev, b, size, repeats, warmup) for b in sizes}
    report = ProfileReport(source=Path(source), kind=kind, device=device_name(dev), device_type=dev.type,
                           threads=torch.get_num_threads(), input_size=size, repeats=repeats, warmup=warmup,
                           profiles=profiles, loadavg=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                           notes=notes)
    if report.loadavg and report.loadavg[0] > (os.cpu_count() or 1) * 0.5 and dev.type == "cpu":
        report.notes.append(f"the machine was busy (load average {report.loadavg[0]:.2f} on {os.cpu_count()} "
                            "cores): these CPU timings are provisional")
    if write:
        from branchnet.atomic import atomic_write_json

        path = Path(out) if out is not None else profile_path(source, dev.type)
        report.written.append(atomic_write_json(path, report.to_json()))
        if plot:
            report.written.append(plot_profile(report, path.with_suffix(".png")))
    return report


def plot_profile(report: ProfileReport, path: str | os.PathLike) -> Path:
    """End-to-end latency of the three networks per batch size (median, interquartile bars),
    with the tree's summed parts beside it."""
    import numpy as np

    from branchnet.plotting import plt, save_figure

    batches = list(report.profiles)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / (len(NETWORKS) + 1)
    colours = {"tree": "tab:blue", "all-shared": "tab:green", "all-separate": "tab:red"}
    xs = np.arange(len(batches))
    for i, name in enumerate(NETWORKS):
        med = [report.profiles[b][name].end_to_end.median * 1e3 for b in batches]
        lo = [(report.profiles[b][name].end_to_end.median - report.profiles[b][name].end_to_end.p25) * 1e3
              for b in batches]
        hi = [(report.profiles[b][name].end_to_end.p75 - report.profiles[b][name].end_to_end.median) * 1e3
              for b in batches]
        ax.bar(xs + i * width, med, width, yerr=[lo, hi], capsize=3, label=name, color=colours[name])
    ax.bar(xs + len(NETWORKS) * width, [report.profiles[b]["tree"].parts_sum * 1e3 for b in batches], width,
           label="tree: sum of parts", color="tab:blue", alpha=0.35, hatch="//")
    ax.set_xticks(xs + width * len(NETWORKS) / 2)
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"end-to-end latency on {report.device_type} ({report.device[:40]})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)

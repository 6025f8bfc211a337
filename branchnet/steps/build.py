"""The ``branchnet build`` step as one library call: search, sweep, write, and report.

:func:`build_tree` runs :func:`~branchnet.tree.search.search_tree` (and, when asked,
:func:`~branchnet.tree.search.pareto_sweep`), writes ``tree.json`` (and ``sweep.png``)
atomically, and returns a :class:`BuildReport` that prints the tree as a rich tree view
with its costs beside those of the all-shared and all-separate networks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branchnet.affinity import AffinityData
from branchnet.tree import Tree, save_tree, separate_tree, shared_tree
from branchnet.units import format_count


@dataclass
class BuildReport:
    """What ``branchnet build`` found and wrote."""

    tree: Tree | None
    sweep: list[Tree] | None
    shared: Tree
    separate: Tree
    written: list[Path] = field(default_factory=list)

    def print(self, console: Any = None) -> None:
        """Print the tree view, its costs, the two end networks and the sweep table (rich, stdout)."""
        from rich.console import Console

        console = console or Console(highlight=False)
        if self.tree is not None:
            console.print(tree_view(self.tree))
            console.print(summary(self.tree))
        console.print(f"all-shared: {_costs(self.shared)}   all-separate: {_costs(self.separate)}")
        if self.tree is not None:
            for note in self.tree.notes:
                console.print(f"note: {note}")
        if self.sweep is not None:
            console.print(sweep_table(self.sweep))


def _costs(tree: Tree) -> str:
    flops = f", {format_count(tree.flops)} FLOPs" if tree.flops is not None else ""
    return f"{format_count(tree.params)} params{flops}, dissimilarity {tree.dissimilarity:.4f}"


def summary(tree: Tree) -> str:
    """One line: params (and budget), FLOPs, dissimilarity, search method."""
    budget = tree.budget or {}
    within = f" (budget {format_count(budget['params'])})" if budget.get("params") is not None else ""
    flops = ""
    if tree.flops is not None:
        cap = f" (budget {format_count(budget['flops'])})" if budget.get("flops") is not None else ""
        flops = f" · {format_count(tree.flops)} FLOPs{cap}"
    method = f" · {tree.method} search" if tree.method else ""
    return (f"params {format_count(tree.params)}{within}{flops} · dissimilarity {tree.dissimilarity:.4f} · "
            f"groups per stage {tuple(tree.group_counts)}{method}")


def tree_view(tree: Tree) -> Any:
    """A rich Tree: input -> stage groups (location and tasks) -> task heads."""
    from rich.tree import Tree as RichTree

    root = RichTree("input")
    parents: dict[str, Any] = {t: root for t in tree.tasks}
    for d, partition in enumerate(tree.partitions):
        current = {}
        for group in partition:
            node = parents[group[0]].add(f"[bold]{tree.locations[d]}[/bold] {', '.join(group)}")
            for t in group:
                current[t] = node
        parents = current
    for t in tree.tasks:
        parents[t].add(f"[dim]head[/dim] {t}")
    return root


def _groups(tree: Tree) -> str:
    """Compact groups: each stage whose partition differs from the one above."""
    parts, previous = [], None
    for d, partition in enumerate(tree.partitions):
        if partition != previous:
            parts.append(f"{tree.locations[d]}: " + " | ".join("+".join(g) for g in partition))
        previous = partition
    return "; ".join(parts)


def sweep_table(trees: list[Tree]) -> Any:
    """The Pareto path as a rich Table (params, FLOPs, dissimilarity, groups)."""
    from rich.table import Table

    table = Table(title="optimal trees as the params budget grows (from this budget on)")
    for name in ("#", "params", "FLOPs", "dissimilarity", "k per stage", "groups"):
        table.add_column(name, overflow="fold")
    for i, tree in enumerate(trees):
        table.add_row(str(i), format_count(tree.params), format_count(tree.flops), f"{tree.dissimilarity:.4f}",
                      ",".join(str(k) for k in tree.group_counts), _groups(tree))
    return table


def plot_sweep(trees: list[Tree], path: str | os.PathLike) -> Path:
    """Dissimilarity against params along the Pareto path (a step plot, like Fig. 5's path)."""
    from branchnet.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [float(t.params) for t in trees]
    ys = [t.dissimilarity for t in trees]
    ax.step(xs, ys, where="post", color="tab:blue", lw=1.5)
    ax.plot(xs, ys, "o", color="tab:blue")
    for i, (x, y) in enumerate(zip(xs, ys)):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("params of the network")
    ax.set_ylabel("task dissimilarity of the tree")
    ax.set_title("optimal tree per params budget")
    ax.grid(alpha=0.3)
    ticks = ax.get_xticks()
    ax.set_xticks(ticks)
    ax.set_xticklabels([format_count(v) for v in ticks])
    ax.set_xlim(min(xs) - 0.03 * (max(xs) - min(xs) + 1), max(xs) + 0.03 * (max(xs) - min(xs) + 1))
    return save_figure(fig, path)


def costs_from_backbone(config: Any, tasks: list[str], backbone: str | None = None,
                        input_size: tuple[int, int] | None = None) -> dict[str, list[float]]:
    """Stage and head costs of ``backbone`` at ``input_size`` with the config's heads.

    For an affinity file without costs (one made with ``branchnet affinity --features``):
    builds the staged encoder (random init, nothing downloaded) with one head per task of
    ``tasks``, typed as in ``config``, and counts parameters and per-image FLOPs
    (``torch.utils.flop_counter``). ``backbone``/``input_size`` default to the config's.

    Returns ``{"stage_params": [D], "stage_flops": [D], "head_params": [N], "head_flops": [N]}``
    with heads in ``tasks`` order. Raises :class:`BadInput` for a task the config lacks or
    an unknown backbone.
    """
    import dataclasses

    from branchnet.nn.backbones import NUM_STAGES
    from branchnet.data import build_tasks
    from branchnet.errors import BadInput
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import shared_partitions

    by_name = {t.name: t for t in build_tasks(config)}
    missing = [t for t in tasks if t not in by_name]
    if missing:
        raise BadInput(f"task(s) {', '.join(missing)} of the affinity file are not in config {config.source} "
                       f"(it has {', '.join(by_name)}); use a config with these tasks, or give --head-params")
    model_cfg = dataclasses.replace(config.model, backbone=backbone) if backbone else config.model
    size = tuple(input_size) if input_size is not None else config.image_size
    if len(size) != 2 or min(size) < 8:
        raise BadInput(f"--input-size {' '.join(map(str, size))} must be two sizes H W of at least 8 pixels")
    net = BranchedNet([by_name[t] for t in tasks], shared_partitions(list(tasks), NUM_STAGES), model_cfg, size)
    costs = net.costs()
    return {"stage_params": [float(v) for v in costs["stage_params"]],
            "stage_flops": [float(v) for v in costs["stage_flops"]],
            "head_params": [float(costs["head_params"][t]) for t in tasks],
            "head_flops": [float(costs["head_flops"][t]) for t in tasks]}


def build_tree(affinity: AffinityData, params_budget: float | None, flops_budget: float | None = None,
               method: str = "auto", sweep: bool = False, costs: dict[str, Any] | None = None,
               out: str | os.PathLike | None = None,
               affinity_path: str | os.PathLike | None = None) -> BuildReport:
    """Search (and sweep), then write ``tree.json`` and ``sweep.png``; returns the report.

    ``out`` defaults to ``tree.json`` beside ``affinity_path`` (or the working directory);
    ``sweep.png`` goes beside ``out``. Nothing is written when the input is bad.
    """
    from branchnet.tree.search import pareto_sweep, resolve_costs, search_tree

    costs = {k: v for k, v in (costs or {}).items() if v is not None}
    resolved = resolve_costs(affinity, **costs)
    ends = dict(affinity=affinity.affinity, **resolved)
    shared = shared_tree(affinity.tasks, affinity.locations, **ends)
    separate = separate_tree(affinity.tasks, affinity.locations, **ends)
    tree = None
    if params_budget is not None:
        tree = search_tree(affinity, params_budget, flops_budget, method, **costs)
    trees = pareto_sweep(affinity, flops_budget, method, **costs) if sweep else None
    base = Path(affinity_path).parent if affinity_path is not None else Path(".")
    out_path = Path(out) if out is not None else base / "tree.json"
    report = BuildReport(tree, trees, shared, separate)
    if tree is not None:
        report.written.append(save_tree(out_path, tree))
    if trees is not None:
        report.written.append(plot_sweep(trees, out_path.parent / "sweep.png"))
    return report

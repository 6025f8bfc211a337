"""What ``branchnet build`` shows: the tree as a rich tree view, its costs beside those of
the all-shared and all-separate networks, the Pareto sweep as a table and a step plot."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branchnet.tree.record import Tree
from branchnet.units import format_count


@dataclass
class BuildReport:
    """What ``branchnet build`` found and wrote."""

    tree: Tree | None
    sweep: list[Tree] | None
    shared: Tree
    separate: Tree
    written: list[Path] = field(default_factory=list)

    def save(self, out: str | os.PathLike) -> list[Path]:
        """Write the tree to ``out`` (``tree.json``) and the sweep's figure beside it (``sweep.png``);
        returns what was written (also added to ``written``)."""
        from branchnet.tree.record import save_tree

        out = Path(out)
        written = []
        if self.tree is not None:
            written.append(save_tree(out, self.tree))
        if self.sweep is not None:
            written.append(plot_sweep(self.sweep, out.parent / "sweep.png"))
        self.written.extend(written)
        return written

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
    cost = tree.extra.get("cost")
    scored = f" ({cost['name']} cost)" if isinstance(cost, dict) and cost.get("name") else ""
    return (f"params {format_count(tree.params)}{within}{flops} · dissimilarity {tree.dissimilarity:.4f}{scored} · "
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
    return population_table(trees, "optimal trees as the params budget grows (from this budget on)")


def population_table(trees: list[Tree], title: str) -> Any:
    """Trees of a population (``build --random`` / ``--exhaustive``) as a rich Table."""
    from rich.table import Table

    table = Table(title=title)
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

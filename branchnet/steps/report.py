"""``branchnet run``'s report: ``report.json``, ``report.md`` and ``report.png`` (Δ_MTL against
parameters) for the single-task models and the trained networks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from branchnet.atomic import atomic_write_json, atomic_write_text
from branchnet.config import Config
from branchnet.progress import say
from branchnet.units import format_count


def make_report(config: Config, runs: Path, single: dict[str, dict], networks: dict[str, dict], tree_name: str,
                build, affinity_paths: dict[str, Path]) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``report.png`` in ``runs``; return the JSON.

    ``single`` and ``networks`` are metrics.json contents by task and by network name
    (``tree_name`` is the budget's tree); ``build`` the :class:`~branchnet.tree.report.BuildReport`;
    ``affinity_paths`` what :func:`~branchnet.steps.affinity.affinity_from_runs` wrote.
    """
    from branchnet.data import build_tasks

    tree_png, tree_mermaid = runs / "tree.png", runs / "tree.mmd"
    labels = {tree_name: f"branched ({tree_name})", "shared": "all-shared", "separate": "all-separate"}

    tasks = build_tasks(config)
    rows = []
    single_params = sum(m["params"] for m in single.values())
    single_flops = sum(m["flops"] for m in single.values())
    rows.append({"network": "single-task models", "groups": "-", "params": single_params, "flops": single_flops,
                 "metrics": {t.name: single[t.name]["test"][t.name][t.main_metric] for t in tasks},
                 "delta_mtl": 0.0})
    for name, metrics in networks.items():
        rows.append({
            "network": labels.get(name, name), "name": name,
            "groups": "-".join(str(len(p)) for p in metrics["partitions"]),
            "params": metrics["params"], "flops": metrics["flops"],
            "metrics": {t.name: metrics["test"][t.name][t.main_metric] for t in tasks},
            "delta_mtl": metrics["delta_mtl"]["test"]["delta_mtl"],
            "protocol": metrics["delta_mtl"].get("protocol", "fair"),
        })
    notes = list(dict.fromkeys(n for m in networks.values() for n in m["delta_mtl"].get("notes", [])))
    tree = build.tree
    summary = {
        "config": config.source, "runs": str(runs), "backbone": config.model.backbone,
        "image_size": list(config.image_size), "epochs": config.train.epochs,
        "tasks": [{"name": t.name, "type": t.type_name, "metric": t.main_metric,
                   "higher_is_better": t.higher_is_better} for t in tasks],
        "budget": tree.budget, "tree": tree.to_json(),
        "sweep": [{"params": t.params, "dissimilarity": t.dissimilarity,
                   "groups": [len(p) for p in t.partitions]} for t in (build.sweep or [])],
        "networks": rows, "delta_notes": notes,
        "files": {"affinity": str(affinity_paths["npz"]), "heatmaps": str(affinity_paths["heatmaps"]),
                  "tree": str(runs / "tree.json"), "tree_png": str(tree_png), "plot": str(runs / "report.png")},
    }
    atomic_write_json(runs / "report.json", summary)
    plot_report(rows, runs / "report.png")
    atomic_write_text(runs / "report.md", report_markdown(summary, tasks, affinity_paths, tree_png, tree_mermaid, runs))
    say(f"report: {runs / 'report.md'}")
    return summary


def report_markdown(summary: dict[str, Any], tasks, affinity_paths: dict[str, Path], tree_png: Path,
                    tree_mermaid: Path, runs: Path) -> str:
    """The Markdown report (relative links, so the run directory can be moved)."""
    def rel(path: Path) -> str:
        return str(Path(path).resolve().relative_to(runs.resolve())) if Path(path).resolve().is_relative_to(
            runs.resolve()) else str(path)

    arrows = {True: "↑", False: "↓"}
    header = ["network", "groups per stage", "params", "GFLOPs"] + [
        f"{t.name} {t.main_metric} {arrows[t.higher_is_better]}" for t in tasks] + ["Δ_MTL (%) ↑"]
    lines = [f"# branchnet report: {summary['config']}", "",
             f"Backbone {summary['backbone']} at {summary['image_size'][0]}x{summary['image_size'][1]}, "
             f"{summary['epochs']} epochs per network; test-split metrics; Δ_MTL against the single-task models "
             "(survey Eq. 10).", ""] + [f"> **Note:** {n}" for n in summary["delta_notes"]] + \
            ([""] if summary["delta_notes"] else []) + [
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary["networks"]:
        cells = [row["network"], row["groups"], format_count(row["params"]), f"{row['flops'] / 1e9:.3f}"]
        cells += [f"{row['metrics'][t.name]:.4g}" for t in tasks]
        cells.append(f"{row['delta_mtl']:+.2f}" + ("*" if row.get("protocol", "fair") != "fair" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    tree = summary["tree"]
    lines += ["", "## Tree", "",
              f"Budget {format_count(tree['budget']['params'])} params: the tree has "
              f"{format_count(tree['params'])} params and dissimilarity {tree['dissimilarity']:.4f}.", "",
              f"![tree]({rel(tree_png)})", "", "```mermaid", Path(tree_mermaid).read_text().strip(), "```", "",
              "## Task affinity (RSA)", "", f"![affinity]({rel(affinity_paths['heatmaps'])})", "",
              f"![affinity by depth]({rel(affinity_paths['depth'])})", "",
              "## Multi-task delta against parameters", "", "![delta](report.png)", ""]
    if summary["sweep"]:
        lines += ["## Pareto path of optimal trees (`branchnet build --sweep`)", "",
                  "| params | dissimilarity | groups per stage |", "|---|---|---|"]
        for item in summary["sweep"]:
            lines.append(f"| {format_count(item['params'])} | {item['dissimilarity']:.4f} | "
                         f"{'-'.join(map(str, item['groups']))} |")
        lines.append("")
    return "\n".join(lines)


def plot_report(rows: list[dict[str, Any]], path: Path) -> Path:
    """Multi-task delta against parameters for every network (like the paper's Fig. 5).

    Networks drawn at the same point (the single-task models and the all-separate network
    often are) get one label naming them all; labels of points close to each other are
    stacked so that none is drawn over another."""
    from branchnet.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    points = _points(rows)
    for (x, y), _ in points:
        ax.scatter(x, y, s=40)
    for ((x, y), names), offset in zip(points, _label_offsets([p for p, _ in points])):
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, offset), fontsize=8)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("Δ_MTL (%) on test")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _points(rows: list[dict[str, Any]]) -> list[tuple[tuple[float, float], list[str]]]:
    """(params in millions, Δ_MTL in %) -> the networks drawn there, in the rows' order; points
    equal as the report prints them (params to 3 significant figures, Δ_MTL to 2 decimals) coincide."""
    points: dict[tuple[str, str], tuple[tuple[float, float], list[str]]] = {}
    for row in rows:
        key = (format_count(row["params"]), f"{row['delta_mtl']:+.2f}")
        point = points.setdefault(key, ((row["params"] / 1e6, row["delta_mtl"]), []))
        point[1].append(row["network"])
    return list(points.values())


def _label_offsets(points: list[tuple[float, float]], step: float = 11.0) -> list[float]:
    """The vertical offset (points) of each label: 4 above its marker, one line lower for every
    earlier label within 8% of the plot's width and 6% of its height (which it would overlap)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    width, height = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    offsets: list[float] = []
    for i, (x, y) in enumerate(points):
        near = sum(1 for (u, v) in points[:i] if abs(u - x) < 0.08 * width and abs(v - y) < 0.06 * height)
        offsets.append(4.0 - step * near)
    return offsets

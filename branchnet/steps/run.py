"""``branchnet run``: the whole pipeline, end to end, and its report.

1. train-single (models already trained are kept);
2. affinity of the single-task models on the held-out affinity split;
3. build the tree of least dissimilarity under the budget (and the Pareto sweep);
4. train the branched network and the all-shared and all-separate baselines (a network
   already trained for the same tree is kept);
5. write ``report.md`` and ``report.json`` (affinity heatmaps, the tree drawing, and per
   task metrics, params, FLOPs and multi-task delta of the three networks) plus a
   figure of multi-task delta against parameters.

Every step reads the artifacts of the step before from the run directory, so an
interrupted run picks up where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from branchnet.nn.backbones import NUM_STAGES
from branchnet.config import Config
from branchnet.errors import BadInput
from branchnet.atomic import atomic_write_json, atomic_write_text, ensure_writable_dir
from branchnet.progress import say
from branchnet.units import format_count, parse_budget

NETWORKS = ("tree", "shared", "separate")


def default_budget(affinity) -> float:
    """Halfway between the all-shared and all-separate networks' parameters."""
    from branchnet.tree.search import resolve_costs
    from branchnet.tree import separate_tree, shared_tree

    costs = resolve_costs(affinity)
    ends = dict(affinity=affinity.affinity, **costs)
    low = shared_tree(affinity.tasks, affinity.locations, **ends).params
    high = separate_tree(affinity.tasks, affinity.locations, **ends).params
    return (low + high) / 2


def _already_trained(config: Config, runs: Path, name: str, partitions: list) -> dict[str, Any] | None:
    """The metrics of a finished run of this tree with the config's training settings, else None."""
    from branchnet.steps.train_branched import branched_dir

    path = branched_dir(runs, name) / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    same = {"partitions": partitions, "init": config.branched.init, "weighting": config.train.weighting,
            "epochs": config.train.epochs, "backbone": config.model.backbone,
            "image_size": list(config.image_size)}
    return metrics if all(metrics.get(k) == v for k, v in same.items()) else None


def check_feasible(config: Config, params_budget: float) -> None:
    """Fail before any training when the budget is below the all-shared network."""
    from branchnet.data import build_tasks
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import shared_partitions

    tasks = build_tasks(config)
    shared = BranchedNet(tasks, shared_partitions([t.name for t in tasks], NUM_STAGES), config.model, config.image_size)
    minimum = sum(p.numel() for p in shared.parameters())
    if params_budget < minimum:
        raise BadInput(f"--params {format_count(params_budget)} is below the all-shared {config.model.backbone} "
                       f"network of these tasks ({format_count(minimum)} = {minimum} params); give at least that")


def run_pipeline(config: Config, runs: Path, params: str | float | None = None, flops: str | float | None = None,
                 *, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run every step for ``config`` in ``runs``; returns the report (also written to disk).

    ``params``/``flops`` are budgets (``"1.5M"``); without ``params`` the config's
    ``branched.params`` is used, else halfway between all-shared and all-separate.
    """
    from branchnet.steps.affinity import affinity_from_runs
    from branchnet.affinity import load_affinity
    from branchnet.steps.train_branched import resolve_tree, train_branched
    from branchnet.tree.export import export_tree
    from branchnet.steps.build import build_tree
    from branchnet.steps.train_single import train_single

    runs = Path(runs)
    ensure_writable_dir(runs)
    params = params if params is not None else config.branched.params
    flops = flops if flops is not None else config.branched.flops
    params_budget = parse_budget(params, "--params") if params is not None else None
    flops_budget = parse_budget(flops, "--flops") if flops is not None else None

    if params_budget is not None:
        check_feasible(config, params_budget)

    say("[1/5] single-task models")
    single = train_single(config, runs, force=force, quiet=quiet)

    say("[2/5] task affinity (RSA)")
    affinity_paths = affinity_from_runs(config, runs, progress=not quiet)
    affinity = load_affinity(affinity_paths["npz"])

    say("[3/5] tree under the budget")
    if params_budget is None:
        params_budget = default_budget(affinity)
        say(f"no --params given: using {format_count(params_budget)}, halfway between all-shared and all-separate")
    report = build_tree(affinity, params_budget, flops_budget, sweep=True, out=runs / "tree.json")
    if not quiet:
        report.print()
    tree_png = export_tree(report.tree, runs / "tree.png", "png")
    tree_mermaid = export_tree(report.tree, runs / "tree.mmd", "mermaid")

    say("[4/5] branched network and baselines")
    networks: dict[str, dict[str, Any]] = {}
    for name in NETWORKS:
        spec = runs / "tree.json" if name == "tree" else name
        partitions = resolve_tree(spec, config)[0]
        existing = None if force else _already_trained(config, runs, name, partitions)
        if existing is not None:
            say(f"branched/{name}: already trained for this tree and these settings, kept")
            networks[name] = existing
        else:
            networks[name] = train_branched(config, runs, spec, name=name, quiet=quiet)

    say("[5/5] report")
    summary = make_report(config, runs, single, networks, report, affinity_paths, tree_png, tree_mermaid)
    return summary


def make_report(config: Config, runs: Path, single: dict[str, dict], networks: dict[str, dict], build,
                affinity_paths: dict[str, Path], tree_png: Path, tree_mermaid: Path) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``report.png`` in ``runs``; return the JSON."""
    from branchnet.data import build_tasks

    tasks = build_tasks(config)
    rows = []
    single_params = sum(m["params"] for m in single.values())
    single_flops = sum(m["flops"] for m in single.values())
    rows.append({"network": "single-task models", "groups": "-", "params": single_params, "flops": single_flops,
                 "metrics": {t.name: single[t.name]["test"][t.name][t.main_metric] for t in tasks},
                 "delta_mtl": 0.0})
    for name, metrics in networks.items():
        rows.append({
            "network": {"tree": "branched (tree.json)", "shared": "all-shared", "separate": "all-separate"}[name],
            "groups": "-".join(str(len(p)) for p in metrics["partitions"]),
            "params": metrics["params"], "flops": metrics["flops"],
            "metrics": {t.name: metrics["test"][t.name][t.main_metric] for t in tasks},
            "delta_mtl": metrics["delta_mtl"]["test"]["delta_mtl"],
        })
    tree = build.tree
    summary = {
        "config": config.source, "runs": str(runs), "backbone": config.model.backbone,
        "image_size": list(config.image_size), "epochs": config.train.epochs,
        "tasks": [{"name": t.name, "type": t.type_name, "metric": t.main_metric,
                   "higher_is_better": t.higher_is_better} for t in tasks],
        "budget": tree.budget, "tree": tree.to_json(),
        "sweep": [{"params": t.params, "dissimilarity": t.dissimilarity,
                   "groups": [len(p) for p in t.partitions]} for t in (build.sweep or [])],
        "networks": rows,
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
             "(survey Eq. 10).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary["networks"]:
        cells = [row["network"], row["groups"], format_count(row["params"]), f"{row['flops'] / 1e9:.3f}"]
        cells += [f"{row['metrics'][t.name]:.4g}" for t in tasks]
        cells.append(f"{row['delta_mtl']:+.2f}")
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
    """Multi-task delta against parameters for every network (like the paper's Fig. 5)."""
    from branchnet.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for row in rows:
        ax.scatter(row["params"] / 1e6, row["delta_mtl"], s=40)
        ax.annotate(row["network"], (row["params"] / 1e6, row["delta_mtl"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("Δ_MTL (%) on test")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)

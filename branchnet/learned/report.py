"""What ``branchnet search`` shows a person: ``predicted.png`` and ``summary.md``.

Both are drawn from the search's record alone (the dict that model.json holds under
``search``, ``diagnostics`` and ``recommended``, and the leave-one-tree-out entries of
:func:`branchnet.learned.diagnostics.leave_one_tree_out`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from branchnet.units import format_count

#: z of the central 95 % interval.
Z95 = 1.959963984540054


def plot_predicted(entries: Sequence[Mapping[str, Any]], tasks: Sequence[str], path: str | os.PathLike,
                   title: str = "Leave one tree out: predicted against measured") -> Path:
    """``predicted.png``: for Δ_MTL and each task, every network's measured change against its
    prediction by the model fitted without its tree, with the 95 % predictive interval as a bar
    and the diagonal; one panel each."""
    from branchnet.plotting import plt, save_figure

    panels = ["Δ_MTL", *tasks]
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for k, name in enumerate(panels):
        ax = axes[k // cols][k % cols]
        if k == 0:
            measured = np.array([e["measured"] for e in entries])
            predicted = np.array([e["predicted"] for e in entries])
            sd = np.array([e["sd"] for e in entries])
        else:
            measured = np.array([e["tasks"][name]["measured"] for e in entries])
            predicted = np.array([e["tasks"][name]["predicted"] for e in entries])
            sd = np.array([e["tasks"][name]["sd"] for e in entries])
        if len(measured):
            inside = np.abs(measured - predicted) <= Z95 * sd
            ax.errorbar(predicted, measured, xerr=Z95 * sd, fmt="none", ecolor="0.75", elinewidth=1, zorder=1)
            ax.scatter(predicted[inside], measured[inside], s=18, color="tab:blue", zorder=2,
                       label="inside its 95% interval")
            ax.scatter(predicted[~inside], measured[~inside], s=22, color="tab:red", marker="x", zorder=3,
                       label="outside")
            lo = float(min(measured.min(), (predicted - Z95 * sd).min()))
            hi = float(max(measured.max(), (predicted + Z95 * sd).max()))
            ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--", zorder=0)
        ax.set_title(f"{name} (change, %)" if k else "Δ_MTL (%)", fontsize=10)
        ax.set_xlabel("predicted without its tree")
        ax.set_ylabel("measured")
        if k == 0 and len(measured):
            ax.legend(fontsize=7, loc="upper left")
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def _number(value: Any, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def summary_markdown(record: Mapping[str, Any], title: str) -> str:
    """``summary.md`` in plain words from the search's record (see the module docstring)."""
    search, diag, model = record["search"], record["diagnostics"], record["model"]
    lines = [f"# {title}", ""]
    measures = ", ".join(m.upper() for m in model["prior"]["measures"]) or "no affinity"
    minutes = search.get("train_seconds", 0.0) / 60
    lines += [f"The search trained {search['networks_trained']} network(s) with its own seeds "
              f"({', '.join(str(s) for s in search['seeds'])}), chosen by {search['acquisition']} from a prior built "
              f"on {measures}, and fitted one model of what sharing each stage with each task costs every task "
              f"(from each network's validation metrics). Training took {minutes:.1f} CPU minutes in all; the "
              f"loop's own work (fitting and proposing) {search.get('overhead_seconds', 0.0):.1f} s.", ""]
    lines += ["## Recommended trees", "",
              "The tree of each budget's window [0.9 B, B] with the best predicted Δ_MTL (posterior mean at a seed "
              "the search never trained with; the interval is the expected value's 95 % interval).", "",
              "| budget | tree | groups | params | predicted Δ_MTL [95 %] | trained by the search |",
              "|---|---|---|---|---|---|"]
    for budget, rec in record["recommended"].items():
        low, high = rec["predicted"] - Z95 * rec["sd"], rec["predicted"] + Z95 * rec["sd"]
        trained = ", ".join(f"seed {s}: {v:+.2f}" for s, v in rec.get("measured", {}).items()) or "no"
        lines.append(f"| {format_count(float(budget))} | `{rec['tree_id']}` | {rec['groups']} | "
                     f"{format_count(rec['params'])} | {rec['predicted']:+.2f} [{low:+.2f}, {high:+.2f}] | {trained} |")
    lines += ["", "## Does the model predict trees it has not seen?", "",
              "Leave one tree out: the model refitted without each tree (all its seeds) predicts that tree's "
              "networks.", ""]
    within = diag["spearman_within_budget"]
    parts = [f"{format_count(float(b))}: {_number(v['spearman'])} ({v['trees']} trees)" for b, v in within.items()]
    cover = diag["coverage_delta"]
    lines += [f"- Spearman of predicted against measured Δ_MTL: {_number(diag['spearman_networks'])} over "
              f"{diag['networks']} networks, {_number(diag['spearman_trees'])} over {diag['trees']} trees.",
              f"- Within each budget's window (the ranking the recommendation relies on): {'; '.join(parts)}.",
              f"- Calibration: {_share(cover.get('0.50'))} of the measured Δ_MTL fall inside their 50 % interval, "
              f"{_share(cover.get('0.80'))} inside the 80 % and {_share(cover.get('0.95'))} inside the 95 % one "
              f"(every task's change pooled: {_share(diag['coverage_tasks'].get('0.95'))} inside the 95 %).",
              f"- Root mean square error of Δ_MTL: {_number(diag['rmse_delta'])} points.", ""]
    lines += ["## What the model learned", ""]
    mean, sd = model["coefficients"]["mean"], model["coefficients"]["sd"]
    if mean["alpha"]:
        lines.append("- Weight of each affinity measure (points of a task's score per stage shared with a task at "
                     "the measure's typical dissimilarity; positive: the measure's dissimilarity costs what it says): "
                     + ", ".join(f"{m.upper()} {mean['alpha'][m]:+.2f} ± {sd['alpha'][m]:.2f}" for m in mean["alpha"])
                     + ".")
    lines.append("- What sharing a stage with one more task does to any task's score: "
                 + ", ".join(f"{loc} {v:+.2f} ± {sd['mu'][loc]:.2f}" for loc, v in mean["mu"].items()) + " points.")
    kappa = {t: sum(row.values()) for t, row in mean["kappa"].items()}
    worst = sorted(kappa, key=kappa.get)
    lines.append("- Tasks by what sharing costs them beyond that (summed over stages, per partner): "
                 + ", ".join(f"{t} {kappa[t]:+.2f}" for t in worst) + ".")
    lines.append(f"- Noise of one task's change in one network: "
                 + ", ".join(f"{t} {v:.2f}" for t, v in model["noise"].items()) + " points (sd).")
    lines += ["", "## Next", "",
              f"`branchnet evaluate --config {search['config']} --runs {search['runs']} --measures "
              f"{','.join([*model['prior']['measures'], 'learned=' + search['directory']])}` trains these trees with seeds 0..S-1, which the search "
              "never saw, beside random trees of each budget, and says whether they beat them.", ""]
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"

"""The budget sweep as a figure: total loss against budget, with the baselines (cf. Standley et al., Fig. 3)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from branchnet.selection.solution import Selection


def plot_sweep(selections: Sequence[Selection], path: str | os.PathLike, title: str | None = None) -> Path:
    """Save a plot of each selection's total loss against its budget (format from the extension)."""
    from branchnet.selection.report import BudgetResult

    return plot_results([BudgetResult(s) for s in selections], path, title)


def plot_results(results: Sequence, path: str | os.PathLike, title: str | None = None) -> Path:
    """Save the sweep of :class:`~branchnet.selection.report.BudgetResult` as a figure.

    With test scores the curves are test losses, as the paper plots them (the optimum
    chosen on the candidates table, dashed, for reference); the random baseline is its
    mean with one standard error either side, the worst selection a dotted line. Budgets
    where the chosen networks change are the filled markers, labelled with the number
    of networks.
    """
    from branchnet.plotting import plt, save_figure

    budgets = [r.selection.budget for r in results]
    tested = all(r.test is not None for r in results)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if tested:
        ax.plot(budgets, [r.test.total_loss for r in results], drawstyle="steps-post", color="C0",
                label="optimal selection (test)")
        ax.plot(budgets, [r.selection.total_loss for r in results], drawstyle="steps-post", color="C0",
                linestyle="--", alpha=0.6, label="optimal selection (candidates table)")
        main = [r.test.total_loss for r in results]
    else:
        ax.plot(budgets, [r.selection.total_loss for r in results], drawstyle="steps-post", color="C0",
                label="optimal selection")
        main = [r.selection.total_loss for r in results]
    changed = [i for i, r in enumerate(results) if r.changed is None or r.changed]
    ax.plot([budgets[i] for i in changed], [main[i] for i in changed], "o", color="C0")
    for i in changed:
        ax.annotate(str(len(results[i].selection.networks)), (budgets[i], main[i]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    rand = [(r.selection.budget, r.random) for r in results if r.random is not None and r.random.draws]
    if rand:
        means = [(b, x.test_mean_total_loss if tested else x.mean_total_loss,
                  (x.test_std_error if tested else x.std_error) or 0.0) for b, x in rand]
        xs, ys, es = zip(*means)
        ax.plot(xs, ys, marker=".", color="C1", label=f"random selection (mean of {rand[0][1].draws})")
        ax.fill_between(xs, [y - e for y, e in zip(ys, es)], [y + e for y, e in zip(ys, es)], color="C1", alpha=0.2)
    worst = [(r.selection.budget, r.worst) for r in results if r.worst is not None]
    if worst:
        ax.plot([b for b, _ in worst],
                [(w.test.total_loss if tested and w.test is not None else w.selection.total_loss) for _, w in worst],
                marker="x", linestyle=":", color="C3", label="worst selection")
    ax.set_xlabel("budget (cost relative to one single-task network)")
    ax.set_ylabel("total loss (sum over tasks)" + (", test" if tested else ""))
    ax.set_title(title or "Total loss per budget (markers: the choice changes; labels: networks)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)

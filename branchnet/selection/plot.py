"""The budget sweep as a figure: best total loss against budget (cf. Standley et al., Fig. 3)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from branchnet.selection.solution import Selection


def plot_sweep(selections: Sequence[Selection], path: str | os.PathLike, title: str | None = None) -> Path:
    """Save a plot of each selection's total loss against its budget (format from the extension)."""
    from branchnet.plotting import plt, save_figure

    budgets = [s.budget for s in selections]
    losses = [s.total_loss for s in selections]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(budgets, losses, marker="o", drawstyle="steps-post", label="optimal selection")
    for s in selections:
        ax.annotate(str(len(s.networks)), (s.budget, s.total_loss), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("budget (cost relative to one single-task network)")
    ax.set_ylabel("total loss (sum over tasks)")
    ax.set_title(title or "Best total loss per budget (labels: number of networks)")
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)

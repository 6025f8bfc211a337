"""Figures of task affinity: heatmaps per location (as Fig. 4 of Vandenhende et al.) and
each task pair's affinity across depth."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from branchnet.affinity.file import AffinityData
from branchnet.plotting import plt, save_figure


def _label(data: AffinityData) -> str:
    """The axis label of the measure that made ``data``."""
    return {"rsa": "task affinity (Spearman)", "fafs": "task affinity (FAFS: P(same difficulty))"}.get(
        data.measure, f"task affinity ({data.measure})")


def plot_affinity_heatmaps(data: AffinityData, path: str | os.PathLike) -> Path:
    """One N x N heatmap per location, shallow to deep, with the values written in.

    With a bootstrap standard deviation the cells read ``value ± std``. The colour scale is
    shared by all panels (affinity in [-1, 1], clipped to the observed range).
    """
    a = np.asarray(data.affinity)
    d, n, _ = a.shape
    std = None if data.affinity_std is None else np.asarray(data.affinity_std)
    cell = 0.62 if std is None else 0.9
    cols = min(d, 4)
    rows = int(np.ceil(d / cols))
    side = max(2.4, cell * n + 1.3)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 1.0, side * rows + 0.4), squeeze=False,
                             layout="constrained")
    off = a[:, ~np.eye(n, dtype=bool)] if n > 1 else a.reshape(d, -1)
    vmin = float(min(0.0, off.min())) if off.size else 0.0
    image = None
    for loc in range(rows * cols):
        ax = axes[loc // cols][loc % cols]
        if loc >= d:
            ax.axis("off")
            continue
        image = ax.imshow(a[loc], cmap="viridis", vmin=vmin, vmax=1.0)
        ax.set_title(data.locations[loc], fontsize=10)
        ax.set_xticks(range(n), data.tasks, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), data.tasks if loc % cols == 0 else [""] * n, fontsize=8)
        for i in range(n):
            for j in range(n):
                value = a[loc, i, j]
                text = f"{value:.2f}" if std is None or i == j else f"{value:.2f}\n±{std[loc, i, j]:.2f}"
                shade = (value - vmin) / max(1e-12, 1.0 - vmin)
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if n <= 6 else 5,
                        color="black" if shade > 0.6 else "white")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=_label(data))
    fig.suptitle("Task affinity per location", fontsize=11)
    return save_figure(fig, path)


def plot_affinity_by_depth(data: AffinityData, path: str | os.PathLike) -> Path:
    """Each task pair's affinity across the D locations (error bars: bootstrap std when present)."""
    a = np.asarray(data.affinity)
    d, n, _ = a.shape
    std = None if data.affinity_std is None else np.asarray(data.affinity_std)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * d + 2.0), 3.8), layout="constrained")
    x = np.arange(d)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    # With error bars, pairs are shifted a little sideways so that the bars stay apart.
    shift = 0.25 / max(1, len(pairs)) if std is not None else 0.0
    for number, (i, j) in enumerate(pairs):
        style = "-" if number < 10 else "--" if number < 20 else ":"
        label = f"{data.tasks[i]} - {data.tasks[j]}"
        if std is not None:
            offset = (number - (len(pairs) - 1) / 2) * shift
            ax.errorbar(x + offset, a[:, i, j], yerr=std[:, i, j], marker="o", linestyle=style, capsize=3,
                        label=label)
        else:
            ax.plot(x, a[:, i, j], marker="o", linestyle=style, label=label)
    ax.set_xticks(x, data.locations)
    ax.set_xlabel("location (shallow to deep)")
    ax.set_ylabel(_label(data))
    ax.grid(alpha=0.3)
    if pairs:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + len(pairs) // 16)
    ax.set_title("Task affinity across depth" + (" (± bootstrap std)" if std is not None else ""), fontsize=10)
    return save_figure(fig, path)

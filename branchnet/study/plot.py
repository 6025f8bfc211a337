"""``pareto.png``: params against test Δ_MTL for every tree of a study (the paper's Fig. 5).

Each distinct tree is a point at its mean over seeds with a bar from its lowest to its
highest seed. The path of each scorer (its trees at the budgets, joined in order of
params) is drawn in its own colour and marker, random and other trees as small grey
dots, all-shared and all-separate as black square and diamond, the budget windows as
shaded bands, and the Pareto front as a green staircase. Readable with a few hundred trees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_STYLES = [("tab:red", "^", "-"), ("tab:blue", "s", "--"), ("tab:orange", "v", "-."), ("tab:purple", "P", ":"),
           ("tab:brown", "X", "-"), ("tab:pink", "*", "--"), ("tab:olive", "h", "-."), ("tab:cyan", "p", ":")]


def plot_pareto(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], path: str | os.PathLike,
                title: str = "Trees of the study: params against Δ_MTL") -> Path:
    """Draw ``pareto.png`` from the rows of trees.csv and their summary; returns the path."""
    from branchnet.plotting import plt, save_figure

    per_tree: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = per_tree.setdefault(row["tree_id"], {"params": float(row["params"]), "seeds": {}, "sources": set()})
        entry["seeds"][int(row["seed"])] = float(row["delta_mtl_test"])
        entry["sources"].add(row["source"])
    ids = list(per_tree)
    x = np.array([per_tree[t]["params"] for t in ids]) / 1e6
    values = [np.array(list(per_tree[t]["seeds"].values())) for t in ids]
    y = np.array([v.mean() for v in values])
    low = y - np.array([v.min() for v in values])
    high = np.array([v.max() for v in values]) - y
    index = {t: i for i, t in enumerate(ids)}

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for entry in summary.get("budgets", []):
        lo, hi = entry["window"]
        ax.axvspan(lo / 1e6, hi / 1e6, color="0.92", zorder=0)
    scorers = list(summary.get("scorers", []))
    special = {"shared", "separate"} | set(scorers)
    others = [i for i, t in enumerate(ids) if not (per_tree[t]["sources"] & special)]
    if others:
        ax.errorbar(x[others], y[others], yerr=[low[others], high[others]], fmt="o", ms=3.5, color="0.45",
                    ecolor="0.75", elinewidth=0.6, alpha=0.8, zorder=2, label="random / other trees")
    for k, name in enumerate(scorers):
        color, marker, line = _STYLES[k % len(_STYLES)]
        mine = [t for t in ids if name in per_tree[t]["sources"]]
        if not mine:
            continue
        order = sorted(mine, key=lambda t: per_tree[t]["params"])
        idx = [index[t] for t in order]
        label = name.upper() if name in ("rsa", "fafs", "tag") else name
        ax.plot(x[idx], y[idx], line, color=color, lw=1.2, alpha=0.8, zorder=3)
        ax.errorbar(x[idx], y[idx], yerr=[low[idx], high[idx]], fmt=marker, ms=7, color=color, ecolor=color,
                    elinewidth=0.9, capsize=2, zorder=4, label=f"{label} path")
    for name, marker in (("shared", "s"), ("separate", "D")):
        if name in index:
            i = index[name]
            ax.errorbar([x[i]], [y[i]], yerr=[[low[i]], [high[i]]], fmt=marker, ms=8, color="black",
                        elinewidth=0.9, capsize=2, zorder=5, label=f"all-{name}")
    front = [index[t] for t in summary.get("pareto_front", []) if t in index]
    if front:
        order = sorted(front, key=lambda i: x[i])
        fx, fy = x[order], y[order]
        ax.step(np.append(fx, x.max()), np.append(fy, fy[-1]), where="post", color="tab:green", lw=1.4,
                alpha=0.9, zorder=1, label="Pareto front")
    ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("Δ_MTL, test (%), mean over seeds; bars: min to max")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return save_figure(fig, path)

"""Matplotlib set-up shared by every figure: a non-interactive backend, atomic saves."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from branchnet.atomic import atomic_path  # noqa: E402


def save_figure(fig: "plt.Figure", path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` atomically (format from the extension) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path

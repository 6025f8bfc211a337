"""Edge odsF: the fast dilation matching against exact one-to-one matching (prints a table).

``BoundaryF(matching="dilation")`` counts a predicted boundary pixel as correct when a true
one lies within the tolerance, and a true pixel as recalled when a predicted one does;
the benchmarks match pixels one-to-one (``matching="exact"``). This measures the gap in
odsF, odsP and odsR (percentage points) and the time of both on synthetic splits shaped
like NYUD-v2's boundaries (edges of a piecewise-constant label map, here random Voronoi
cells) with two kinds of prediction:

* ``thin``: the boundaries of a perturbed label map (seeds moved by up to 1.5 px), 10% of
  the boundary dropped in contiguous gaps, 0.5% spurious pixels, probability 0.9 there and uniform noise in
  [0, 0.3] elsewhere: roughly one pixel wide, as after non-maximum suppression;
* ``blurred``: the same boundaries blurred with a Gaussian (sigma 1 px), rescaled to a
  peak of 1, plus the same noise: two to four pixels wide, as raw CNN outputs are.

Usage::

    python tools/bench_edges.py [--images 8] [--size 120 160] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from branchnet.tasks.metrics import BoundaryF, tolerance_pixels  # noqa: E402


def voronoi_labels(seeds: np.ndarray, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return np.argmin(d, axis=2)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label (one-pixel-wide boundaries)."""
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1] |= labels[:-1] != labels[1:]
    return edge


def make_split(images: int, height: int, width: int, rng: np.random.Generator, kind: str):
    from scipy.ndimage import gaussian_filter

    probs, truths = [], []
    for _ in range(images):
        seeds = rng.uniform([0, 0], [height, width], size=(int(rng.integers(8, 20)), 2))
        truth = boundaries(voronoi_labels(seeds, height, width))
        moved = seeds + rng.uniform(-1.5, 1.5, size=seeds.shape)
        pred = boundaries(voronoi_labels(moved, height, width))
        # gaps where a smooth random field is lowest: contiguous runs, about 10% of the boundary
        field = gaussian_filter(rng.normal(size=pred.shape), 3.0)
        pred &= field > np.quantile(field, 0.10)
        pred |= rng.uniform(size=pred.shape) < 0.005
        noise = rng.uniform(0, 0.3, size=pred.shape)
        if kind == "thin":
            prob = np.where(pred, 0.9, noise)
        else:
            blurred = gaussian_filter(pred.astype(np.float64), 1.0)
            prob = np.maximum(blurred / blurred.max(), noise)
        probs.append(prob)
        truths.append(truth)
    prob = torch.tensor(np.stack(probs)[:, None], dtype=torch.float32)
    truth = torch.tensor(np.stack(truths)[:, None], dtype=torch.float32)
    return prob, truth


def measure(prob, truth, max_dist: float, matching: str) -> tuple[dict, float]:
    acc = BoundaryF(max_dist, matching)
    started = time.perf_counter()
    acc.update(prob, truth, torch.ones_like(truth, dtype=torch.bool))
    return acc.compute(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[120, 160])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    height, width = args.size
    print(f"{args.images} images of {height} x {width}; odsF/odsP/odsR in %, differences in points "
          "(dilation - exact)\n")
    print("| prediction | maxDist | radius px | exact odsF | dilation odsF | ΔF | ΔP | ΔR | exact s | dilation s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in ("thin", "blurred"):
        prob, truth = make_split(args.images, height, width, np.random.default_rng(args.seed), kind)
        for max_dist in (0.0075, 0.011):
            exact, t_exact = measure(prob, truth, max_dist, "exact")
            fast, t_fast = measure(prob, truth, max_dist, "dilation")
            print(f"| {kind} | {max_dist} | {tolerance_pixels(max_dist, height, width):.2f} | "
                  f"{exact['odsF']:.2f} | {fast['odsF']:.2f} | {fast['odsF'] - exact['odsF']:+.2f} | "
                  f"{fast['odsP'] - exact['odsP']:+.2f} | {fast['odsR'] - exact['odsR']:+.2f} | "
                  f"{t_exact:.2f} | {t_fast:.3f} |")


if __name__ == "__main__":
    main()

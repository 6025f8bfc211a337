"""Complete-linkage clustering per stage, made to nest: the baseline and the starting trees.

Complete linkage merges the two clusters whose union has the smallest diameter, which is
the per-group term of the dissimilarity (the largest ``1 - A[d, i, j]`` inside a group),
so its dendrograms (scipy.cluster.hierarchy) are natural building blocks:

* :func:`linkage_baseline`: cut every stage's dendrogram at one common height, intersect
  each stage's clusters with the stage above so that the partitions nest, and among the
  heights whose tree fits the budget keep the one of least dissimilarity. This is the
  baseline the scalable search must never lose to (it is one of its starting points).
* :func:`top_down` / :func:`bottom_up`: nested trees with prescribed group counts k,
  built stage by stage from dendrograms.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import cut_tree, fcluster, linkage
from scipy.spatial.distance import squareform

from branchnet.tree.search.problem import Problem, better, canonical_labels, shared_labels
from branchnet.tree.search.subsets import minplus


def complete_linkage(dist: np.ndarray) -> np.ndarray | None:
    """scipy complete-linkage matrix for a square distance matrix (None for < 2 points)."""
    if dist.shape[0] < 2:
        return None
    return linkage(squareform(dist, checks=False), method="complete")


def cut(z: np.ndarray | None, n: int, groups: int) -> np.ndarray:
    """Labels (n,) of the dendrogram ``z`` cut into exactly ``groups`` clusters."""
    if z is None or groups >= n:
        return np.arange(n)
    if groups <= 1:
        return np.zeros(n, dtype=np.int64)
    return cut_tree(z, n_clusters=[groups])[:, 0].astype(np.int64)


def group_diameters(dist: np.ndarray, labels: np.ndarray) -> float:
    """Sum over the groups of ``labels`` of their largest in-group distance."""
    total = 0.0
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        if len(idx) > 1:
            total += float(dist[np.ix_(idx, idx)].max())
    return total


def meet(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Labels of the common refinement of two partitions."""
    _, inv = np.unique(np.stack([coarse, fine], axis=1), axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def linkage_baseline(problem: Problem) -> np.ndarray:
    """The best common-height cut of the per-stage complete-linkage dendrograms that fits.

    Returns (D, N) labels; falls back to the all-shared tree when no cut fits (the caller
    checks that the all-shared tree fits the budget).
    """
    depth, n = problem.depth, problem.num_tasks
    zs = [complete_linkage(problem.dist[d]) for d in range(depth)]
    heights = sorted({float(h) for z in zs if z is not None for h in z[:, 2]} | {0.0})
    best_key, best = None, shared_labels(depth, n)
    for h in heights:
        labels = np.zeros((depth, n), dtype=np.int64)
        for d in range(depth):
            own = np.arange(n) if zs[d] is None else fcluster(zs[d], t=h, criterion="distance") - 1
            labels[d] = own if d == 0 else meet(own, labels[d - 1])
        counts = np.array([len(np.unique(row)) for row in labels])
        if not problem.fits(counts):
            continue
        key = problem.key(labels)
        if better(key, best_key):
            best_key, best = key, labels
    return canonical_labels(best)


class Dendrograms:
    """Per-stage complete-linkage dendrograms of the whole task set and of its subsets (cached)."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self._cache: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def curve(self, level: int, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For a task subset: (cost[a], labels[a - 1]) of the best cut into a = 1..|members| groups.

        ``cost`` has length |members|+1 with cost[0] = inf; labels[a-1] is (|members|,).
        """
        key = (level, tuple(int(m) for m in members))
        if key not in self._cache:
            dist = self.problem.dist[level][np.ix_(members, members)]
            size = len(members)
            z = complete_linkage(dist)
            if z is None:
                cuts = np.zeros((1, size), dtype=np.int64)
            else:
                # scipy's cut_tree misplaces the n-cluster cut unless it comes first in
                # n_clusters, so ask in descending order and flip
                cuts = cut_tree(z, n_clusters=list(range(size, 0, -1))).T[::-1].astype(np.int64)
            cost = np.full(size + 1, np.inf)
            for a in range(1, size + 1):
                cost[a] = group_diameters(dist, cuts[a - 1])
            self._cache[key] = (cost, cuts)
        return self._cache[key]

    def estimates(self, counts: np.ndarray) -> np.ndarray:
        """``sum_d cost_d(k_d) / k_d`` from whole-set cuts, for count vectors (M, D): a guide, not a bound."""
        n = self.problem.num_tasks
        everyone = np.arange(n)
        total = np.zeros(len(counts))
        for d in range(self.problem.depth):
            cost, _ = self.curve(d, everyone)
            total += cost[counts[:, d]] / counts[:, d]
        return total


def top_down(dendrograms: Dendrograms, counts: np.ndarray) -> np.ndarray | None:
    """Nested labels with group counts ``counts``: stage 0 from the whole-set cut, then each
    stage splits every group of the stage above by its own dendrogram, with the group
    counts shared out by a min-plus allocation of the cut costs. None if impossible."""
    problem = dendrograms.problem
    depth, n = problem.depth, problem.num_tasks
    labels = np.zeros((depth, n), dtype=np.int64)
    parents = [np.arange(n)]
    for d in range(depth):
        curves = [dendrograms.curve(d, g) for g in parents]
        total = np.full(n + 1, np.inf)
        total[0] = 0.0
        partial = [total]
        for cost, _ in curves:
            nxt = minplus(partial[-1], np.r_[cost, np.full(n + 1 - len(cost), np.inf)])
            partial.append(nxt)
        want = int(counts[d])
        if not np.isfinite(partial[-1][want]):
            return None
        shares = []
        for i in range(len(parents) - 1, -1, -1):  # backtrack the allocation
            cost, _ = curves[i]
            options = [(partial[i][want - a] + cost[a], a) for a in range(1, min(len(cost) - 1, want) + 1)]
            _, a = min(options, key=lambda x: (x[0], x[1]))
            shares.append(a)
            want -= a
        shares.reverse()
        nxt_parents, label = [], 0
        for g, (_, cuts), a in zip(parents, curves, shares):
            sub = cuts[a - 1]
            for c in range(a):
                members = g[sub == c]
                labels[d, members] = label
                label += 1
                nxt_parents.append(members)
        parents = nxt_parents
    return labels


def bottom_up(problem: Problem, counts: np.ndarray) -> np.ndarray:
    """Nested labels with group counts ``counts``: the deepest stage from its dendrogram, then
    each stage above merges the groups below by complete linkage on that stage's distances."""
    depth, n = problem.depth, problem.num_tasks
    labels = np.zeros((depth, n), dtype=np.int64)
    labels[-1] = cut(complete_linkage(problem.dist[-1]), n, int(counts[-1]))
    for d in range(depth - 2, -1, -1):
        atoms = [np.flatnonzero(labels[d + 1] == g) for g in np.unique(labels[d + 1])]
        m = len(atoms)
        atom_dist = np.zeros((m, m))
        for i in range(m):
            for j in range(i + 1, m):
                atom_dist[i, j] = atom_dist[j, i] = problem.dist[d][np.ix_(atoms[i], atoms[j])].max()
        merged = cut(complete_linkage(atom_dist), m, int(counts[d]))
        for i, members in enumerate(atoms):
            labels[d, members] = merged[i]
    return labels

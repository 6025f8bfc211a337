"""The tree-search problem in index form, shared by every search algorithm.

A tree over N tasks and D stages is held as a label array ``labels`` of shape (D, N):
``labels[d, t]`` names task t's group at stage d. Labels nest: two tasks with the same
label at stage d have the same label at every stage above d. Group counts
``k_d = |P_d|`` fix the cost (params, FLOPs and the latency model are linear in k), and for a fixed k the
dissimilarity is a weighted sum of per-group maxima::

    dissimilarity = sum_d S_d / k_d,   S_d = sum_{g in P_d} max_{i<j in g} dist[d, i, j]

with ``dist = 1 - A``. Every algorithm here works with these two facts.

The paper's group term (the largest in-group distance, over ``k_d``) is the default; a
:class:`Problem` may carry another cost form of :mod:`branchnet.tree.group_cost`
(``form``: ``"mean"``, ``"weighted"``) with ``dissimilarity = sum_d S_d / Z(k_d)``, ``S_d``
the sum of that form's group terms. The exact search handles every form; the scalable
search (built on group diameters) only ``"max"``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: Two dissimilarities closer than this are a tie (then fewer params wins, docs/design.md).
TIE_TOL = 1e-9


@dataclass
class Problem:
    """One search: distances, per-stage costs and the budget.

    Attributes:
        dist: (D, N, N) ``1 - A``; symmetric, zero diagonal, values in [0, 2] (any finite
            values for the learned cost's ``"pairsum"`` form).
        stage_params: (D,) parameters of one copy of each stage.
        head_params: total parameters of all task heads (a constant of every tree).
        stage_flops: (D,) FLOPs of one copy of each stage, or None.
        head_flops: total head FLOPs, or None.
        max_params: params budget (whole network), or None for no limit.
        max_flops: FLOPs budget (whole network), or None for no limit.
        form: the group term over ``dist`` (:data:`branchnet.tree.group_cost.FORMS`):
            ``"max"`` (the paper's worst pair), ``"mean"`` or ``"weighted"``.
        stage_latency: (D,) measured seconds of one copy of each stage (at the profiled
            device and batch), or None. A tree's latency is modelled like its FLOPs:
            ``sum_d k_d * stage_latency[d] + head_latency`` (docs/deploy.md, "Latency budgets").
        head_latency: total seconds of all task heads, or None.
        max_latency: latency budget in seconds (the model above), or None for no limit.
        min_params: the least params a tree may have, or None: with ``max_params`` a budget
            window (docs/design.md, "Evaluation": ``[0.9 B, B]``), where the learned cost's
            recommended tree is searched.

    Without a latency table every latency is 0.0, so keys and ties are those of params
    and FLOPs alone.
    """

    dist: np.ndarray
    stage_params: np.ndarray
    head_params: float
    stage_flops: np.ndarray | None = None
    head_flops: float | None = None
    max_params: float | None = None
    max_flops: float | None = None
    form: str = "max"
    stage_latency: np.ndarray | None = None
    head_latency: float | None = None
    max_latency: float | None = None
    min_params: float | None = None

    def __post_init__(self) -> None:
        dist = np.asarray(self.dist, dtype=np.float64)
        # Exactly symmetric with a zero diagonal: an affinity file is symmetric only to
        # ~1e-6, and the searches assume dist[d, i, j] == dist[d, j, i] bit for bit.
        dist = (dist + dist.transpose(0, 2, 1)) / 2
        idx = np.arange(dist.shape[1])
        dist[:, idx, idx] = 0.0
        self.dist = dist
        self.stage_params = np.asarray(self.stage_params, dtype=np.float64)
        if self.stage_flops is not None:
            self.stage_flops = np.asarray(self.stage_flops, dtype=np.float64)
        if self.stage_latency is not None:
            self.stage_latency = np.asarray(self.stage_latency, dtype=np.float64)

    @property
    def depth(self) -> int:
        return int(self.dist.shape[0])

    @property
    def num_tasks(self) -> int:
        return int(self.dist.shape[1])

    # -- costs of group-count vectors ------------------------------------------------

    def params_of(self, counts: np.ndarray) -> np.ndarray:
        """Params of trees with group counts ``counts`` (..., D)."""
        return np.asarray(counts, dtype=np.float64) @ self.stage_params + self.head_params

    def flops_of(self, counts: np.ndarray) -> np.ndarray | None:
        """FLOPs of trees with group counts ``counts`` (..., D), or None when unknown."""
        if self.stage_flops is None:
            return None
        return np.asarray(counts, dtype=np.float64) @ self.stage_flops + float(self.head_flops or 0.0)

    def latency_of(self, counts: np.ndarray) -> np.ndarray | None:
        """Modelled latency (seconds) of trees with group counts ``counts`` (..., D), or None."""
        if self.stage_latency is None:
            return None
        return np.asarray(counts, dtype=np.float64) @ self.stage_latency + float(self.head_latency or 0.0)

    def fits(self, counts: np.ndarray) -> np.ndarray:
        """Whether trees with group counts ``counts`` (..., D) fit the budget."""
        counts = np.asarray(counts)
        ok = np.ones(counts.shape[:-1], dtype=bool)
        if self.max_params is not None:
            ok &= within(self.params_of(counts), self.max_params)
        if self.min_params is not None:
            ok &= at_least(self.params_of(counts), self.min_params)
        if self.max_flops is not None:
            flops = self.flops_of(counts)
            assert flops is not None, "a FLOPs budget needs stage FLOPs"
            ok &= within(flops, self.max_flops)
        if self.max_latency is not None:
            latency = self.latency_of(counts)
            assert latency is not None, "a latency budget needs stage latencies"
            ok &= within(latency, self.max_latency)
        return ok

    def count_vectors(self, feasible_only: bool = True) -> np.ndarray:
        """Every group-count vector a tree can have: (M, D) int, non-decreasing in [1, N].

        Sorted lexicographically; with ``feasible_only`` only those within the budget.
        """
        n, d = self.num_tasks, self.depth
        k = np.array(list(itertools.combinations_with_replacement(range(1, n + 1), d)), dtype=np.int64)
        k = k.reshape(-1, d)
        return k[self.fits(k)] if feasible_only else k

    # -- trees as label arrays -----------------------------------------------------

    def level_sums(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per stage: the sum of group terms S_d (group maxima for ``"max"``) and the group
        count k_d. Both (D,)."""
        d_, n = labels.shape
        sums = np.zeros(d_)
        counts = np.zeros(d_, dtype=np.int64)
        for d in range(d_):
            if self.form == "max":
                sums[d], counts[d] = level_cost(self.dist[d], labels[d])
            else:
                sums[d], counts[d] = level_cost_of(self.dist[d], labels[d], self.form)
        return sums, counts

    def normaliser(self, counts: np.ndarray) -> np.ndarray:
        """``Z(k)`` per stage for group counts ``counts`` (..., D): k itself, or N for ``"weighted"``."""
        from branchnet.tree.group_cost import divisor

        return divisor(counts, self.num_tasks, self.form)

    def dissimilarity(self, labels: np.ndarray) -> float:
        sums, counts = self.level_sums(labels)
        return float(np.sum(sums / self.normaliser(counts)))

    def key(self, labels: np.ndarray) -> tuple[float, float, float, float]:
        """(dissimilarity, params, flops, latency) of a tree: what the tie-breaking compares
        (an unknown FLOPs or latency counts 0.0)."""
        sums, counts = self.level_sums(labels)
        flops = self.flops_of(counts)
        latency = self.latency_of(counts)
        return (float(np.sum(sums / self.normaliser(counts))), float(self.params_of(counts)),
                float(flops) if flops is not None else 0.0, float(latency) if latency is not None else 0.0)


def within(cost, limit: float):
    """``cost <= limit`` up to float rounding (costs are sums of products of floats)."""
    return cost <= limit + 1e-9 * max(1.0, abs(limit))


def at_least(cost, floor: float):
    """``cost >= floor`` up to float rounding (the lower edge of a budget window)."""
    return cost >= floor - 1e-9 * max(1.0, abs(floor))


def level_cost(dist: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """(sum over groups of the largest in-group distance, number of groups) for one stage."""
    uniq, inv = np.unique(labels, return_inverse=True)
    if len(uniq) == len(labels):
        return 0.0, len(uniq)
    same = inv[:, None] == inv[None, :]
    rowmax = np.where(same, dist, 0.0).max(axis=1)
    gmax = np.zeros(len(uniq))
    np.maximum.at(gmax, inv, rowmax)
    return float(gmax.sum()), len(uniq)


def level_cost_of(dist: np.ndarray, labels: np.ndarray, form: str) -> tuple[float, int]:
    """(sum over groups of the ``form`` group term, number of groups) for one stage."""
    from branchnet.tree.group_cost import group_term

    uniq = np.unique(labels)
    return float(sum(group_term(dist, np.flatnonzero(labels == g), form) for g in uniq)), len(uniq)


def better(a: tuple[float, ...], b: tuple[float, ...] | None) -> bool:
    """Whether key ``a`` = (dissimilarity, params, flops, latency, ...) beats ``b`` (docs/design.md ties).

    Least dissimilarity wins; dissimilarities within :data:`TIE_TOL` tie and then fewer
    params, then fewer FLOPs, then less (modelled) latency, then the remaining key entries
    (compared as tuples) decide.
    """
    if b is None:
        return True
    if a[0] < b[0] - TIE_TOL:
        return True
    if a[0] > b[0] + TIE_TOL:
        return False
    return tuple(a[1:]) < tuple(b[1:])


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel each stage 0..k-1 in the order of each group's first task."""
    out = np.empty_like(labels)
    for d in range(labels.shape[0]):
        _, first, inv = np.unique(labels[d], return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        out[d] = rank[inv]
    return out


def labels_to_partitions(labels: np.ndarray, tasks: list[str]) -> list[list[list[str]]]:
    """Label array -> canonical partitions of task names."""
    labels = canonical_labels(labels)
    out = []
    for d in range(labels.shape[0]):
        groups: list[list[str]] = [[] for _ in range(int(labels[d].max()) + 1)]
        for t, g in enumerate(labels[d]):
            groups[g].append(tasks[t])
        out.append(groups)
    return out


def partitions_to_labels(partitions: list[list[list[str]]], tasks: list[str]) -> np.ndarray:
    """Partitions of task names -> (D, N) canonical label array."""
    index = {t: i for i, t in enumerate(tasks)}
    labels = np.zeros((len(partitions), len(tasks)), dtype=np.int64)
    for d, partition in enumerate(partitions):
        for g, group in enumerate(partition):
            for t in group:
                labels[d, index[t]] = g
    return canonical_labels(labels)


def is_nested(labels: np.ndarray) -> bool:
    """Whether every stage's partition refines the one above it."""
    for d in range(1, labels.shape[0]):
        pairs = np.unique(np.stack([labels[d], labels[d - 1]]), axis=1)
        if len(np.unique(pairs[0])) != pairs.shape[1]:
            return False
    return True


def shared_labels(depth: int, n: int) -> np.ndarray:
    return np.zeros((depth, n), dtype=np.int64)


def separate_labels(depth: int, n: int) -> np.ndarray:
    return np.tile(np.arange(n, dtype=np.int64), (depth, 1))

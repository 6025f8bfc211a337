"""Exact tree search: a dynamic program over task subsets with Pareto sets and bounds.

The problem (Vandenhende et al., Section 3.2; docs/design.md "Tree"): choose nested partitions
``P_0 ⊑ ... ⊑ P_{D-1}`` of N tasks minimising ``sum_d S_d / k_d`` (``S_d`` the sum of the
group diameters at stage d, ``k_d = |P_d|``) subject to a budget on ``k`` (params,
FLOPs and modelled latency are linear in k). Brute force is hopeless (billions of chains at N = 10).

The weights ``1/k_d`` depend on the whole tree, so a subtree cannot be summarised by one
number. Instead, for every stage l and task subset S, the program keeps the *forests* of
S at stage l (S split into stage-l groups, each with its own subtree below) as points
``(counts c_l..c_{D-1}, sums s_l..s_{D-1})``. Two forests with the same counts are
compared by ``sum_j s_j / k_j`` for the final counts k they may end in (k ≥ c), so a
point is kept only if it is the best of its counts for at least one such k. Forests of S
are built from one group T ∋ low(S) plus a forest of S \\ T (each partition counted once).

Bounds make it fast. With an upper bound U_k on the best tree with counts k (from a
heuristic tree), a point is dropped when, for every admissible k, ::

    sum_{j<l} G_j[S, k_j] / k_j + sum_{j>=l} (s_j + F_j[R, k_j - c_j]) / k_j  >  U_k

where ``R`` is the rest of the tasks, ``F_j`` the best unnested split of a subset into a
given number of groups at stage j and ``G_j`` the same for all tasks with S kept together
(S lies inside one group at every stage above l). Count vectors whose plain bound
``sum_j F_j[all, k_j] / k_j`` exceeds U_k are never considered. The result is exact: a
tree is only ever discarded when a kept one is at least as good for every budget it fits.

Nothing above needs the group term to be the largest distance: any cost of a subset
(:func:`~branchnet.tree.search.subsets.subset_costs`) and any per-stage normaliser of the
group count (``1 / k_d``, or ``1 / N`` for the size-weighted cost) keep every argument, so
the same program searches every cost of :mod:`branchnet.tree.group_cost` exactly
(``problem.form``; "diam" below is that subset cost).

Time and memory grow like 3^N; N = 10 at D = 4 takes about a second (docs/tree.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from branchnet.tree.search.problem import TIE_TOL, Problem, better
from branchnet.tree.search.subsets import (best_partition, minplus, partition_table, subset_costs,
                                           submasks_with_low, together_table)

#: Largest N the exact search accepts (memory and time grow like 2^N and 3^N).
MAX_EXACT_TASKS = 14

_CHUNK = 2_000_000  # matrix entries per bound evaluation block (memory cap)


@dataclass
class SubsetTables:
    """Per-stage subset tables (see :mod:`branchnet.tree.search.subsets`), each indexed [d][S, a].

    ``diam[d][S]`` is the group term of subset S at stage d under ``form`` (the diameter
    for the paper's ``"max"``).
    """

    diam: list[np.ndarray]
    split: list[np.ndarray]
    together: list[np.ndarray]
    form: str = "max"

    @classmethod
    def build(cls, dist: np.ndarray, form: str = "max") -> "SubsetTables":
        n = dist.shape[1]
        diam = [subset_costs(dist[d], form) for d in range(dist.shape[0])]
        split = [partition_table(m, n) for m in diam]
        together = [together_table(m, f, n) for m, f in zip(diam, split)]
        return cls(diam, split, together, form)

    @property
    def num_tasks(self) -> int:
        return self.split[0].shape[1] - 1

    def normaliser(self, counts: np.ndarray) -> np.ndarray:
        """``Z(k)`` for group counts ``counts`` (any shape): k, or N for the ``"weighted"`` form."""
        from branchnet.tree.group_cost import divisor

        return divisor(counts, self.num_tasks, self.form)

    def plain_bound(self, counts: np.ndarray) -> np.ndarray:
        """``sum_d F_d[all, k_d] / Z(k_d)`` for count vectors (M, D): a lower bound ignoring nesting."""
        full = self.diam[0].shape[0] - 1
        return sum(self.split[d][full][counts[:, d]] / self.normaliser(counts[:, d])
                   for d in range(counts.shape[1]))


@dataclass
class Frontier:
    """The best tree found for each surviving count vector (rows), with a way to build it."""

    counts: np.ndarray  # (R, D) int
    values: np.ndarray  # (R,) dissimilarity
    _dp: "_ParetoDP"

    def labels(self, row: int) -> np.ndarray:
        """(D, N) labels of the tree of row ``row``."""
        return self._dp.reconstruct(int(row))


class _ParetoDP:
    def __init__(self, problem: Problem, tables: SubsetTables, counts: np.ndarray, upper: np.ndarray):
        self.p = problem
        self.t = tables
        self.n = problem.num_tasks
        self.depth = problem.depth
        self.full = (1 << self.n) - 1
        self.k = counts.astype(np.int64)
        self.w = 1.0 / tables.normaliser(self.k)
        self.upper = upper + TIE_TOL
        self.levels: list[dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []

    # A forest store: for each subset S, (counts (M, dims), sums (M, dims), provenance (M, 3)).

    def run(self) -> tuple[np.ndarray, np.ndarray]:
        depth, n = self.depth, self.n
        stores: list[dict] = [dict() for _ in range(depth)]
        self.levels = stores
        subsets = range(1, 1 << n)
        # Deepest stage: the best split of S into c groups comes straight from the table.
        last = depth - 1
        store = stores[last]
        store[0] = self._empty(1)
        alive = self._alive_columns(last)
        for s in subsets:
            cols = np.flatnonzero(alive[s])
            if not len(cols):
                continue
            sizes = np.arange(1, bin(s).count("1") + 1)
            sums = self.t.split[last][s, sizes]
            cnt = sizes[:, None]
            keep = self._prune(last, s, cnt, sums[:, None], cols)
            if keep.size:
                store[s] = (cnt[keep], sums[keep][:, None], np.stack([sizes[keep], 0 * keep, 0 * keep], 1))
        for level in range(depth - 2, -1, -1):
            below, store = stores[level + 1], stores[level]
            dims = depth - level
            store[0] = self._empty(dims)
            diam = self.t.diam[level]
            has_node = np.zeros(1 << n, bool)
            has_node[list(below)] = True
            has_node[0] = False
            has_forest = np.zeros(1 << n, bool)
            has_forest[0] = True
            heads: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            # At stage 0 only the whole set and forests of what is left beside the group
            # of task 0 (subsets without task 0) are ever needed.
            todo = [s for s in subsets if not s & 1] + [self.full] if level == 0 else subsets
            alive = self._alive_columns(level)
            for s in todo:
                cols = np.flatnonzero(alive[s])
                if not len(cols):
                    continue
                subs = submasks_with_low(s)
                subs = subs[has_node[subs] & has_forest[s ^ subs]]
                if not len(subs):
                    continue
                parts_c, parts_s, sizes_a, sizes_b = [], [], [], []
                for t in subs.tolist():
                    head = heads.get(t)
                    if head is None:  # group t at this stage, its subtree from the stage below
                        nc, ns, _ = below[t]
                        head = heads[t] = (np.concatenate([np.ones((len(nc), 1), np.int64), nc], 1),
                                           np.concatenate([np.full((len(ns), 1), diam[t]), ns], 1))
                    rc, rs, _ = store[s ^ t]
                    parts_c.append((head[0][:, None, :] + rc[None, :, :]).reshape(-1, dims))
                    parts_s.append((head[1][:, None, :] + rs[None, :, :]).reshape(-1, dims))
                    sizes_a.append(len(head[0]))
                    sizes_b.append(len(rc))
                cnt, sums = np.concatenate(parts_c), np.concatenate(parts_s)
                keep = self._prune(level, s, cnt, sums, cols)
                if not keep.size:
                    continue
                # provenance of the kept rows: (group t, row of t's subtree, row of the rest)
                a, b = np.array(sizes_a), np.array(sizes_b)
                ends = np.cumsum(a * b)
                block = np.searchsorted(ends, keep, side="right")
                local = keep - (ends - a * b)[block]
                prov = np.stack([subs[block], local // b[block], local % b[block]], 1)
                store[s] = (cnt[keep], sums[keep], prov)
                has_forest[s] = True
        root = stores[0].get(self.full)
        if root is None:
            return np.zeros((0, depth), np.int64), np.zeros(0)
        cnt, sums, _ = root
        return cnt, (sums / self.t.normaliser(cnt)).sum(axis=1)

    def _alive_columns(self, level: int) -> np.ndarray:
        """(2^N, K) whether some forest of S at ``level`` could end in a tree with counts k
        within its bound: a bound per (S, k) from the tables alone (before any forest is built)."""
        n, k, w = self.n, self.k, self.w
        masks = np.arange(1 << n)
        bound = np.zeros((1 << n, len(k)))
        for j in range(level):  # S lies inside one group above this stage
            bound += self.t.together[j][:, k[:, j]] * w[None, :, j]
        for j in range(level, self.depth):  # S and the rest are split separately
            split = self.t.split[j]
            rest = split[self.full ^ masks]
            both = np.full((1 << n, n + 1), np.inf)
            for c in range(1, n + 1):
                both[:, c:] = np.minimum(both[:, c:], split[:, c:c + 1] + rest[:, :n + 1 - c])
            bound += both[:, k[:, j]] * w[None, :, j]
        return bound <= self.upper[None, :]

    def _empty(self, dims: int):
        return (np.zeros((1, dims), np.int64), np.zeros((1, dims)), np.full((1, 3), -1, np.int64))

    def _prune(self, level: int, s: int, cnt: np.ndarray, sums: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Indices of the rows worth keeping (sorted), see the module docstring.

        Only the count vectors ``cols`` (indices into K) are considered: the others
        cannot be reached from S within their bound.
        """
        k, w, n = self.k[cols], self.w[cols], self.n
        upper = self.upper[cols]
        rest = self.full ^ s
        base = np.zeros(len(k))
        for j in range(level):
            base += self.t.together[j][s, k[:, j]] * w[:, j]
        # Sort rows by their counts so that rows with equal counts are adjacent.
        code = np.zeros(len(cnt), np.int64)
        for jj in range(cnt.shape[1]):
            code = code * (n + 1) + cnt[:, jj]
        order = np.argsort(code, kind="stable")
        code = code[order]
        starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
        ends = np.r_[starts[1:], len(code)]
        keep: list[np.ndarray] = []
        per_block = max(1, _CHUNK // max(1, len(k)))
        g0 = 0
        while g0 < len(starts):
            g1 = g0 + 1
            while g1 < len(starts) and ends[g1 - 1] - starts[g0] < per_block:
                g1 += 1
            lo, hi = starts[g0], ends[g1 - 1]
            rows = order[lo:hi]
            bound = np.broadcast_to(base, (hi - lo, len(k))).copy()
            for jj in range(cnt.shape[1]):
                j = level + jj
                remaining = k[None, :, j] - cnt[rows, jj][:, None]
                table = self.t.split[j][rest]
                extra = np.where(remaining >= 0, table[np.clip(remaining, 0, n)], np.inf)
                bound += (sums[rows, jj][:, None] + extra) * w[None, :, j]
            bound = np.where(bound <= upper[None, :], bound, np.inf)
            local_starts = starts[g0:g1] - lo
            best = np.minimum.reduceat(bound, local_starts, axis=0)
            group = np.repeat(np.arange(g1 - g0), np.diff(np.r_[local_starts, hi - lo]))
            hit = np.isfinite(bound) & (bound <= best[group] + 1e-12)
            first = np.minimum.reduceat(np.where(hit, np.arange(hi - lo)[:, None], hi - lo), local_starts, axis=0)
            chosen = np.unique(first[first < hi - lo])
            keep.append(rows[chosen])
            g0 = g1
        return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)

    def reconstruct(self, row: int) -> np.ndarray:
        labels = np.full((self.depth, self.n), -1, np.int64)
        next_label = [0] * self.depth

        def forest(level: int, s: int, r: int) -> None:
            if level == self.depth - 1:
                groups = int(self.levels[level][s][2][r, 0])
                for g in best_partition(self.t.diam[level], self.t.split[level], s, groups):
                    labels[level, _members(g)] = next_label[level]
                    next_label[level] += 1
                return
            while s:
                _, _, prov = self.levels[level][s]
                t, node_row, rest_row = (int(v) for v in prov[r])
                labels[level, _members(t)] = next_label[level]
                next_label[level] += 1
                forest(level + 1, t, node_row)
                s, r = s ^ t, rest_row

        forest(0, self.full, row)
        assert (labels >= 0).all()
        return labels


def _members(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def exact_frontier(problem: Problem, counts: np.ndarray, upper: np.ndarray,
                   tables: SubsetTables | None = None) -> Frontier:
    """The best tree for every count vector in ``counts`` (M, D) whose best is at most ``upper`` (M,).

    Count vectors whose best tree is worse than its ``upper`` (plus :data:`TIE_TOL`) may
    be missing from the result; every other row is exact. ``upper`` may hold inf.
    """
    if tables is None:
        tables = SubsetTables.build(problem.dist, problem.form)
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, problem.depth)
    upper = np.asarray(upper, dtype=np.float64)
    alive = tables.plain_bound(counts) <= upper + TIE_TOL
    dp = _ParetoDP(problem, tables, counts[alive], upper[alive])
    cnt, values = dp.run()
    return Frontier(cnt, values, dp)


def greedy_tree(tables: SubsetTables, counts: np.ndarray) -> np.ndarray | None:
    """A quick tree with group counts ``counts``: each stage takes the best refinement of the
    stage above into k_d groups (exact per stage, blind to the stages below). None if impossible."""
    depth = len(tables.diam)
    n = tables.split[0].shape[1] - 1
    labels = np.zeros((depth, n), np.int64)
    parts = [(1 << n) - 1]
    for d in range(depth):
        want = int(counts[d])
        partial = [np.r_[0.0, np.full(n, np.inf)]]
        for part in parts:
            partial.append(minplus(partial[-1], tables.split[d][part]))
        if not np.isfinite(partial[-1][want]):
            return None
        shares = []
        for i in range(len(parts) - 1, -1, -1):
            row = tables.split[d][parts[i]]
            options = partial[i][want - np.arange(1, want + 1)] + row[1:want + 1]
            a = int(np.argmin(options)) + 1
            shares.append(a)
            want -= a
        shares.reverse()
        new_parts = []
        for part, a in zip(parts, shares):
            new_parts += best_partition(tables.diam[d], tables.split[d], part, a)
        for g, part in enumerate(new_parts):
            labels[d, _members(part)] = g
        parts = new_parts
    return labels


def exact_search(problem: Problem, tables: SubsetTables | None = None, starts: int = 8) -> np.ndarray:
    """The optimal tree within the budget, as (D, N) labels.

    An incumbent (the best of :func:`greedy_tree` for the ``starts`` count vectors of least
    plain bound, polished by local search for the ``"max"`` form, the one the local search
    knows) caps the search; the bound is then raised from
    the least plain bound towards it (doubling the gap each time) until a tree is found,
    so the work tracks the optimum rather than the incumbent. Ties follow
    :func:`branchnet.tree.search.problem.better`, then the smaller count vector.
    """
    from branchnet.tree.search.local import local_search

    if tables is None:
        tables = SubsetTables.build(problem.dist, problem.form)
    counts = problem.count_vectors()
    plain = tables.plain_bound(counts)
    trees = [greedy_tree(tables, counts[i]) for i in np.argsort(plain, kind="stable")[:starts]]
    trees = [t for t in trees if t is not None]
    incumbent = min(trees, key=lambda t: _sortable(problem, t))
    if problem.form == "max":
        incumbent = local_search(problem, incumbent)
    top = problem.dissimilarity(incumbent)
    low = float(plain.min())
    gap = (top - low) / 4
    while True:
        limit = min(low + gap, top)
        frontier = exact_frontier(problem, counts, np.full(len(counts), limit), tables)
        if len(frontier.counts) or limit >= top:
            break
        gap *= 2
    best, best_key = None, None
    for row in range(len(frontier.counts)):
        c = frontier.counts[row]
        flops = problem.flops_of(c)
        latency = problem.latency_of(c)
        key = (float(frontier.values[row]), float(problem.params_of(c)),
               float(flops) if flops is not None else 0.0, float(latency) if latency is not None else 0.0,
               tuple(int(v) for v in c))
        if better(key, best_key):
            best, best_key = row, key
    if best is None:  # cannot happen: the incumbent's count vector survives its own bound
        return incumbent
    return frontier.labels(best)


def _sortable(problem: Problem, labels: np.ndarray) -> tuple:
    key = problem.key(labels)
    return (round(key[0], 9), key[1], key[2], key[3])

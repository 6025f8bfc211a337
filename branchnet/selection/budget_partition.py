"""A lower bound for the selection branch and bound: task partitions priced on a budget grid.

In any solution each chosen network serves a block of tasks (those it is best at), so
the tasks a completion ``A`` of a partial solution improves form a set ``U`` split into
blocks, one per network of ``A``, whose costs fit the remaining budget ``b_r``. Hence,
for every completion,

    loss >= min_{U ⊇ uncovered} [ sum_{t not in U} cur_t + H(U, b_r) ]

    W(B, j) = min_{n solves B, kappa_n <= j} sum_{t in B} L(n, t)            (one block)
    H(U, k) = min over partitions of U into blocks B_i with sum_i j_i <= k of sum_i W(B_i, j_i)

where ``cur`` is the partial solution's served loss per task and costs are counted on a
grid of step ``q``: ``kappa_n = floor(c_n / q)`` and the budget ``b_r`` allows
``k = floor(b_r / q)`` steps. Rounding costs down only admits more completions, so the
bound stays valid whatever ``q``; when every cost is a multiple of ``q`` (the paper's
networks cost 1 and 0.5) it is the exact optimum of the completion problem, apart from
networks bought twice, which never help. ``H`` does not depend on the partial solution:
it is computed once by dynamic programming over subsets of tasks (the ``3^T``
block/rest pairs, times the grid levels). The partition search
(:mod:`~branchnet.selection.partition_search`) looks up ``H(R, k)`` for the tasks ``R``
a partial partition leaves and the steps ``k`` its budget left allows; :meth:`bound`
gives the bound of any partial solution.

The same tables give first solutions: the partition attaining ``H(all tasks, k)`` with
costs rounded *up* to the grid (so that its networks surely fit) is a good incumbent,
and with grid costs an optimal one.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Above this many tasks the tables (2^T columns, 3^T work per level) are not built.
MAX_TASKS = 14

#: Work allowed for the tables, in block/rest pairs times grid steps: the grid gets
#: ``WORK / 3^T`` steps (between :data:`MIN_LEVELS` and :data:`MAX_LEVELS`).
WORK = 3e7
MIN_LEVELS, MAX_LEVELS = 12, 256


def max_levels(n_tasks: int) -> int:
    """How many budget steps the grid may have for ``n_tasks`` tasks."""
    return int(min(MAX_LEVELS, max(MIN_LEVELS, WORK / 3.0 ** n_tasks)))

#: Grid steps tried, largest first, for costs that are exact multiples of one of them.
GRID_STEPS = (1.0, 0.5, 0.25, 0.2, 0.125, 0.1, 0.0625, 0.05, 0.04, 0.03125, 0.025, 0.02, 0.01)

# Stands in for the loss of an uncovered task: any U leaving one out sums to at least
# this and never wins the minimum, while 0 * _BIG stays 0 in the matrix products.
_BIG = 1e200

# Elements per temporary array in the table build and the children's bounds.
_CHUNK = 1 << 22

@lru_cache(maxsize=None)
def _subset_bits(k: int) -> np.ndarray:
    """All 2^k subsets of k items as a 0/1 matrix (2^k, k), row i = binary digits of i."""
    return ((np.arange(1 << k)[:, None] >> np.arange(k)) & 1).astype(np.float64)


def blocks_of(u: int) -> np.ndarray:
    """The subsets of the task set ``u`` (a bit mask) that hold its lowest task, as bit masks
    (each partition of ``u`` is built once by taking its block of the lowest task first)."""
    low = u & -u
    rest = u ^ low
    positions = [b for b in range(rest.bit_length()) if rest >> b & 1]
    if not positions:
        return np.array([low], dtype=np.int64)
    bits = _subset_bits(len(positions)).astype(np.int64)
    return (bits @ np.array([1 << b for b in positions], dtype=np.int64)) | low


@lru_cache(maxsize=2)
def _layers(n_tasks: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per subset size s: (the subsets U of size s, their blocks B, segment starts).

    The blocks of U are the subsets of U holding U's lowest task (so each partition is
    built once); they are concatenated in the order of U, ``starts[i]`` being where the
    i-th U's blocks begin.
    """
    sizes = np.array([bin(u).count("1") for u in range(1 << n_tasks)])
    layers = []
    for s in range(1, n_tasks + 1):
        subsets = np.flatnonzero(sizes == s)
        blocks, starts, at = [], [], 0
        for u in subsets.tolist():
            sub = blocks_of(u)
            blocks.append(sub)
            starts.append(at)
            at += sub.size
        layers.append((subsets, np.concatenate(blocks), np.array(starts, dtype=np.int64)))
    return layers


def grid_step(costs: np.ndarray, budget: float, levels: int = MIN_LEVELS) -> tuple[float, bool]:
    """The grid step ``q`` for ``costs`` up to ``budget``, and whether every such cost is a multiple of it.

    The largest of :data:`GRID_STEPS` that divides every cost at most ``budget`` and
    gives at most ``levels`` steps. Otherwise costs are rounded down (the bound is then
    valid but not exact) on the step ``budget / k``, ``levels / 2 <= k <= levels``, that
    loses the least of any cost (relative to it), since each network's loss adds up.
    """
    costs = np.asarray(costs, dtype=np.float64)
    used = costs[costs <= budget * (1 + 1e-9)]
    for q in GRID_STEPS:
        if budget / q > levels + 1e-9:
            break
        ratio = used / q
        if np.all(np.abs(ratio - np.round(ratio)) <= 1e-9 * np.maximum(1.0, ratio)):
            return q, True
    positive = np.unique(used[used > 0])
    if positive.size == 0:
        return max(budget, 1e-12) / levels, False
    steps = max(budget, 1e-12) / np.arange(max(1, levels // 2), levels + 1)
    ratio = positive[None, :] / steps[:, None]
    lost = ((ratio - np.floor(ratio + 1e-9)) / ratio).max(axis=1)  # (steps,): worst relative rounding
    return float(steps[int(np.argmin(lost))]), False


class BudgetPartitionBound:
    """Precomputed ``H`` tables; :meth:`bound` gives a node's lower bound.

    Args:
        losses: float (M, T), ``inf`` where a network does not solve a task.
        costs: float (M,), >= 0.
        budget: the largest budget the search will be run with.
        slack: the budget slack the search allows (``fits``), added before rounding.
        blocks: optional ``(block, loss, row)`` arrays: the (block, network) pairs that
            may serve in a best solution and the network's loss on the block (the
            partition search's fronts); by default every network with every sub-block
            of its tasks.
    """

    def __init__(self, losses: np.ndarray, costs: np.ndarray, budget: float, slack: float = 0.0,
                 blocks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        self.blocks = blocks
        self.losses = np.asarray(losses, dtype=np.float64)
        self.costs = np.asarray(costs, dtype=np.float64)
        self.n_tasks = self.losses.shape[1]
        self.slack = float(slack)
        self.q, self.exact = grid_step(self.costs, budget, max_levels(self.n_tasks))
        self.levels = self.level(budget)
        self.usable = self.costs <= budget + self.slack  # no other network ever fits
        self.outside = 1.0 - _subset_bits(self.n_tasks)  # (2^T, T): 1 where t is not in U
        down = np.floor(self.costs / self.q + 1e-9).astype(np.int64)
        self.h, self._fronts = self._tables(down)
        if self.exact:
            self._h_up, self._fronts_up = self.h, self._fronts
        else:  # costs rounded up: the partitions of these tables surely fit the budget
            up = np.ceil(self.costs / self.q - 1e-9).astype(np.int64)
            self._h_up, self._fronts_up = self._tables(up)
        # floor[t]: the least loss any network that fits has on t (inf: none solves it).
        self.floor = np.where(self.usable[:, None], self.losses, np.inf).min(axis=0) if len(self.costs) else \
            np.full(self.n_tasks, np.inf)
        finite = self.h[np.isfinite(self.h)]
        self.h_scale = float(np.abs(finite).max()) if finite.size else 0.0
        solved = np.where(np.isfinite(self.losses), self.losses, 0.0)
        self.ref_total = float(solved.max(axis=0).sum()) if solved.size else 0.0

    def level(self, remaining: float) -> int:
        """Grid steps a remaining budget allows: ``floor((remaining + slack) / q)``, at least 0."""
        return max(0, int(np.floor((float(remaining) + self.slack) / self.q + 1e-6)))

    def levels_of(self, remaining: np.ndarray) -> np.ndarray:
        """:meth:`level` of each remaining budget (K,), capped at the table's top level."""
        steps = np.floor((np.asarray(remaining, dtype=np.float64) + self.slack) / self.q + 1e-6)
        return np.clip(steps, 0, self.levels).astype(np.int64)

    # -- tables ----------------------------------------------------------------------------
    def _block_values(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``W[j, B]`` (K+1, 2^T) and the network attaining it (-1: none), for grid costs ``steps``."""
        n_tasks, n_levels = self.n_tasks, self.levels + 1
        solves = np.isfinite(self.losses)
        w = np.full(n_levels * (1 << n_tasks), np.inf)
        net = np.full(w.size, -1, dtype=np.int64)
        counts = solves.sum(axis=1)
        if self.blocks is not None:
            block, value, rows = self.blocks
            ok = (steps[rows] <= self.levels) & self.usable[rows]
            block, value, rows = block[ok], value[ok], rows[ok]
            key = steps[rows] * (1 << n_tasks) + block
            np.minimum.at(w, key, value)
            order = np.lexsort((rows, value, key))  # per key, the network attaining the minimum (first row)
            first = np.ones(order.size, dtype=bool)
            first[1:] = key[order][1:] != key[order][:-1]
            net[key[order][first]] = rows[order][first]
        for size in range(1, n_tasks + 1) if self.blocks is None else ():
            group = np.flatnonzero((counts == size) & (steps <= self.levels) & self.usable)
            bits = _subset_bits(size)  # (2^s, s)
            per = max(1, _CHUNK // (1 << size))
            for lo in range(0, group.size, per):  # networks of `size` tasks, a chunk at a time
                rows = group[lo:lo + per]
                positions = np.nonzero(solves[rows])[1].reshape(rows.size, size)  # (g, s) ascending
                block = (bits.astype(np.int64) @ (np.int64(1) << positions).T).T  # (g, 2^s)
                key = (steps[rows, None] * (1 << n_tasks) + block).ravel()
                value = (self.losses[rows[:, None], positions] @ bits.T).ravel()  # (g * 2^s,)
                np.minimum.at(w, key, value)
                hit = value == w[key]
                net[key[hit]] = np.repeat(rows, 1 << size)[hit]  # a network attaining the minimum so far
        w, net = w.reshape(n_levels, -1), net.reshape(n_levels, -1)
        w[:, 0], net[:, 0] = np.inf, -1  # the empty block is never a network's
        # A larger allowance never hurts: running minimum over levels, and its network.
        best = np.minimum.accumulate(w, axis=0)
        drop = np.isfinite(w) & (w == best)
        drop[1:] &= w[1:] < best[:-1]
        at = np.maximum.accumulate(np.where(drop, np.arange(n_levels)[:, None], -1), axis=0)
        net = np.where(at >= 0, np.take_along_axis(net, np.maximum(at, 0), axis=0), -1)
        w = best
        return w, net

    def _tables(self, steps: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``H`` (K+1, 2^T) and each block's price list (levels, values, networks), (2^T, P) each."""
        n_levels = self.levels + 1
        w, net = self._block_values(steps)
        # Each block's price list: the levels where its value drops (few: the distinct costs).
        drops = np.isfinite(w) & (w < np.vstack([np.full((1, w.shape[1]), np.inf), w[:-1]]))
        block, level = np.nonzero(drops.T)
        count = np.bincount(block, minlength=w.shape[1])
        width = max(1, int(count.max()) if count.size else 1)
        rank = np.arange(block.size) - np.repeat(np.cumsum(count) - count, count)
        f_level = np.full((w.shape[1], width), n_levels, dtype=np.int64)
        f_value = np.full((w.shape[1], width), np.inf)
        f_net = np.full((w.shape[1], width), -1, dtype=np.int64)
        f_level[block, rank], f_value[block, rank], f_net[block, rank] = level, w[level, block], net[level, block]

        h = np.full((n_levels, w.shape[1]), np.inf)
        h[:, 0] = 0.0
        ks = np.arange(n_levels)[:, None]
        for subsets, blocks, starts in _layers(self.n_tasks):
            owner = np.repeat(subsets, np.diff(np.append(starts, blocks.size)))
            per = max(1, _CHUNK // (n_levels * width * (blocks.size // subsets.size)))  # subsets per chunk
            for lo in range(0, subsets.size, per):
                hi = min(subsets.size, lo + per)
                a, b = starts[lo], (starts[hi] if hi < subsets.size else blocks.size)
                bl, rest = blocks[a:b], owner[a:b] ^ blocks[a:b]
                best = np.full((n_levels, b - a), np.inf)
                for p in range(width):
                    src = ks - f_level[bl, p][None, :]
                    ok = src >= 0
                    vals = f_value[bl, p][None, :] + h[np.where(ok, src, 0), rest[None, :]]
                    np.minimum(best, np.where(ok, vals, np.inf), out=best)
                h[:, subsets[lo:hi]] = np.minimum.reduceat(best, starts[lo:hi] - a, axis=1)
        return h, (f_level, f_value, f_net)

    # -- first solutions --------------------------------------------------------------------
    def solution(self, budget: float) -> list[int] | None:
        """The networks of a partition attaining ``H(all tasks, budget)`` with costs rounded up.

        Every such set fits ``budget`` (in grid steps; the caller checks the exact
        cost); None when no partition does. Rows of the ``losses`` given to the constructor.
        """
        h, (f_level, f_value, f_net) = self._h_up, self._fronts_up
        k, u = min(self.level(budget), self.levels), (1 << self.n_tasks) - 1
        if not np.isfinite(h[k, u]):
            return None
        rows: set[int] = set()
        while u:
            blocks = blocks_of(u)
            for p in range(f_level.shape[1]):
                lv = f_level[blocks, p]
                ok = lv <= k
                vals = np.where(ok, f_value[blocks, p] + h[np.where(ok, k - lv, 0), u ^ blocks], np.inf)
                hit = np.flatnonzero(vals == h[k, u])
                if hit.size:
                    b = int(blocks[hit[0]])
                    rows.add(int(f_net[b, p]))
                    k -= int(f_level[b, p])
                    u ^= b
                    break
            else:  # pragma: no cover - the table was built from these very sums
                return None
        return sorted(rows)

    # -- bounds --------------------------------------------------------------------------------
    def node_table(self, cur: np.ndarray) -> np.ndarray:
        """``F[U] = sum_{t not in U} cur_t`` (2^T,), ``_BIG`` for each uncovered task left out.

        Args:
            cur: a partial solution's served loss per task (T,), ``inf`` where uncovered.
        """
        return self.outside @ np.where(np.isfinite(cur), cur, _BIG)

    def values(self, table: np.ndarray, remaining: float) -> np.ndarray:
        """The bound (1,) from :meth:`node_table` and the budget left."""
        k = min(self.level(remaining), self.levels)
        return np.array([float((table + self.h[k]).min())])

    def bound(self, cur: np.ndarray, remaining: float) -> float:
        """Least total loss any completion of a partial solution can reach."""
        return float(self.values(self.node_table(cur), remaining)[0])

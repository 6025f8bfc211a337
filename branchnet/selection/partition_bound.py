"""A lower bound for the selection branch and bound: Lagrangian relaxation over task partitions.

In any solution each chosen network serves a block of tasks (those it is best at), so
the tasks a completion ``A`` of a partial solution improves form a set ``U`` split into
blocks, one per network of ``A``. Moving the budget into the objective with a
multiplier ``lambda >= 0`` (a Lagrangian relaxation, Fisher 1981) gives, for every
completion within the remaining budget ``b_r``,

    loss >= min_{U ⊇ uncovered} [ sum_{t not in U} cur_t + H_lambda(U) ] - lambda * b_r

    w_lambda(B) = min_{n solves B} ( sum_{t in B} L(n, t) + lambda * c_n )   (one block)
    H_lambda(U) = min over partitions of U into blocks of sum_B w_lambda(B)

where ``cur`` is the partial solution's served loss per task. ``H`` does not depend on
the partial solution, so it is computed once for a grid of multipliers by dynamic
programming over subsets of tasks (``3^T`` block/rest pairs); a node then takes
``O(2^T)`` work per multiplier. Used for up to :data:`MAX_TASKS` tasks.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Above this many tasks the tables (2^T rows, 3^T work) are not built.
MAX_TASKS = 14

# Stands in for the loss of an uncovered task: any U leaving one out then sums to at
# least this and never wins the minimum (U = all tasks always has a finite value),
# while 0 * _BIG stays 0 in the matrix products (0 * inf would be NaN).
_BIG = 1e200


@lru_cache(maxsize=None)
def _subset_bits(k: int) -> np.ndarray:
    """All 2^k subsets of k items as a 0/1 matrix (2^k, k), row i = binary digits of i."""
    return ((np.arange(1 << k)[:, None] >> np.arange(k)) & 1).astype(np.float64)


@lru_cache(maxsize=4096)
def _submasks(mask: int) -> tuple[np.ndarray, np.ndarray]:
    """The subsets of the bits of ``mask``: (their masks (2^k,), 0/1 membership (2^k, k))."""
    positions = [b for b in range(mask.bit_length()) if mask >> b & 1]
    bits = _subset_bits(len(positions))
    return (bits @ np.array([1 << b for b in positions], dtype=np.float64)).astype(np.int64), bits


@lru_cache(maxsize=2)
def _first_blocks(n_tasks: int) -> list[np.ndarray]:
    """For each subset U (index), the blocks B of U that hold U's lowest task."""
    out = [np.zeros(0, dtype=np.int64)]
    for u in range(1, 1 << n_tasks):
        low = u & -u
        out.append(_submasks(u ^ low)[0] | low)
    return out


class PartitionBound:
    """Precomputed ``H_lambda`` tables; :meth:`bound` gives a node's lower bound.

    Args:
        losses: float (M, T), ``inf`` where a network does not solve a task.
        costs: float (M,).
        n_multipliers: how many multipliers (besides 0) on a geometric grid.
    """

    def __init__(self, losses: np.ndarray, costs: np.ndarray, n_multipliers: int = 24) -> None:
        n_tasks = losses.shape[1]
        n_sub = 1 << n_tasks
        solves = np.isfinite(losses)
        self.lambdas = self._grid(losses, costs, n_multipliers)
        lam = self.lambdas
        self.outside = 1.0 - _subset_bits(n_tasks)  # (2^T, T): 1 where t is not in U

        # w[B, k]: best single network serving exactly block B, priced at lambda_k
        # (w_net: which network).
        w = np.full((n_sub, lam.size), np.inf)
        w_net = np.full((n_sub, lam.size), -1, dtype=np.int64)
        masks = (solves.astype(np.int64) << np.arange(n_tasks)).sum(axis=1)
        for n in range(losses.shape[0]):
            sub, bits = _submasks(int(masks[n]))
            vals = (bits @ losses[n, solves[n]])[:, None] + lam[None, :] * costs[n]
            better = vals < w[sub]  # sub has no repeats within one network
            w[sub] = np.where(better, vals, w[sub])
            w_net[sub] = np.where(better, n, w_net[sub])

        # H[U, k]: best partition of U into blocks; the block holding U's lowest task
        # is chosen first so each partition is counted once (h_block: that block).
        h = np.full((n_sub, lam.size), np.inf)
        h[0] = 0.0
        h_block = np.zeros((n_sub, lam.size), dtype=np.int64)
        columns = np.arange(lam.size)
        for u, blocks in enumerate(_first_blocks(n_tasks)):
            if u == 0:
                continue
            options = w[blocks] + h[u ^ blocks]
            pick = options.argmin(axis=0)
            h[u] = options[pick, columns]
            h_block[u] = blocks[pick]
        self._w_net, self._h_block = w_net, h_block
        self.h = h
        self.h_rows = np.ascontiguousarray(h.T)  # (Λ, 2^T): one contiguous row per multiplier
        self.h_scale = float(np.abs(h[np.isfinite(h)]).max()) if np.isfinite(h).any() else 0.0
        finite = np.where(solves, losses, 0.0)
        self.ref_total = float(finite.max(axis=0).sum()) if finite.size else 0.0

    def lagrangian_solutions(self) -> list[list[int]]:
        """For each multiplier, the networks of the partition attaining ``H_lambda(all tasks)``.

        These cover every task (rows of the ``losses`` given to the constructor); the
        branch and bound offers them as first incumbents (a Lagrangian heuristic).
        """
        full = self.h.shape[0] - 1
        found: list[list[int]] = []
        for k in range(self.lambdas.size):
            if not np.isfinite(self.h[full, k]):
                continue
            rows, u = set(), full
            while u:
                block = int(self._h_block[u, k])
                rows.add(int(self._w_net[block, k]))
                u ^= block
            if sorted(rows) not in found:
                found.append(sorted(rows))
        return found

    @staticmethod
    def _grid(losses: np.ndarray, costs: np.ndarray, n: int) -> np.ndarray:
        """0 and a geometric grid of multipliers (loss per unit cost) spanning the instance."""
        finite = np.where(np.isfinite(losses), losses, np.nan)
        spread = float(np.nansum(np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)))
        scale = float(np.nanmax(finite)) * losses.shape[1] + spread
        positive = costs[costs > 0]
        unit = float(positive.min()) if positive.size else 1.0
        top = max(scale, 1e-300) / unit
        return np.concatenate([[0.0], top * np.geomspace(1e-5, 1.0, n)])

    def node_table(self, cur: np.ndarray) -> np.ndarray:
        """``F[U, k] = sum_{t not in U} cur_t + H_{lambda_k}(U)``, float64 (2^T, Λ).

        Args:
            cur: a partial solution's served loss per task (T,), ``inf`` where uncovered.
        """
        outside = self.outside @ np.where(np.isfinite(cur), cur, _BIG)
        return outside[:, None] + self.h

    def values(self, table: np.ndarray, remaining: float) -> np.ndarray:
        """The bound at every multiplier (Λ,), from :meth:`node_table` and the budget left."""
        return table.min(axis=0) - self.lambdas * max(remaining, 0.0)

    def bound(self, cur: np.ndarray, remaining: float) -> float:
        """Least total loss any completion of a partial solution can reach."""
        return float(self.values(self.node_table(cur), remaining).max())

    def children_bounds(self, cur: np.ndarray, table: np.ndarray, remaining: float, losses: np.ndarray,
                        costs: np.ndarray, threshold: float | None) -> np.ndarray:
        """Lower bounds for the children ``S_r + n`` of a node, one per candidate n (K,).

        A bound above ``threshold`` is only guaranteed to be above it (such children are
        pruned, so their exact bound is not worked out); below it, it is a true lower bound.

        Args:
            cur: the node's served loss per task (T,), ``inf`` where uncovered.
            table: :meth:`node_table` of ``cur``.
            remaining: the node's remaining budget.
            losses: the candidates' losses (K, T); costs: their costs (K,).
            threshold: the incumbent's total loss plus a margin (None: no incumbent).
        """
        lam = self.lambdas
        left = np.maximum(remaining - costs, 0.0)  # (K,) each child's remaining budget
        improves = losses < cur
        # red[n, t]: how much child n lowers task t (inf where it covers a task first)
        red = np.subtract(cur, losses, out=np.zeros_like(losses), where=improves)
        # A child's F(U) is the node's less the reductions outside U: cheap bound first.
        best_f = table.min(axis=0)
        cheap = (best_f[None, :] - np.outer(left, lam)).max(axis=1) - red.sum(axis=1)
        out = cheap
        unsure = np.arange(len(costs)) if threshold is None else np.flatnonzero(cheap <= threshold)
        if unsure.size == 0:
            return out
        k = int(self.values(table, remaining).argmax())
        which = np.arange(k, min(lam.size, k + 3))  # children have less budget: their best multiplier is k or above
        error = self.rounding_error(cur)
        columns = None
        if threshold is not None:
            # Only subsets U where some child could get below the threshold matter: no
            # child does better outside U than the best of them on each task.
            lowest = np.minimum(cur, losses[unsure].min(axis=0))
            low = (self.h[:, which] + (self.outside @ np.where(np.isfinite(lowest), lowest, _BIG))[:, None]
                   - lam[which][None, :] * left[unsure].max())
            columns = np.flatnonzero((low <= threshold + error).any(axis=1))
            if columns.size == 0:
                out[unsure] = np.inf
                return out
        children = np.minimum(cur, losses[unsure])
        out[unsure] = self._exact(children, left[unsure], which, columns) - error
        return out

    def _exact(self, curs: np.ndarray, left: np.ndarray, which: np.ndarray,
               columns: np.ndarray | None) -> np.ndarray:
        """The bound of K partial solutions over the multipliers ``which`` and subsets ``columns``."""
        outside = self.outside if columns is None else self.outside[columns]
        values = np.where(np.isfinite(curs), curs, _BIG) @ outside.T  # (K, |U|)
        best = np.full(curs.shape[0], -np.inf)
        buffer = np.empty_like(values)
        for k in which.tolist():
            np.add(values, self.h_rows[k] if columns is None else self.h_rows[k][columns], out=buffer)
            best = np.maximum(best, buffer.min(axis=1) - self.lambdas[k] * left)
        return best

    def rounding_error(self, cur: np.ndarray) -> float:
        """How far :meth:`_exact` can overshoot (float64 rounding) for children of a node with losses ``cur``."""
        scale = float(np.abs(cur[np.isfinite(cur)]).sum()) + float(self.ref_total) + self.h_scale
        return 8 * float(np.finfo(np.float64).eps) * (cur.size + 3) * (scale + 1.0)

"""Exact selection as a search over partitions of the tasks (the search for large tables).

In a best solution every chosen network is the best of the chosen on some task (one
that is not can be dropped: the loss stays, the cost does not rise and the networks
are fewer), so a best solution is a partition of the tasks into *blocks*, each served
by one network that solves all of its block, with the networks' costs fitting the
budget; its loss is the sum of the blocks' losses ``L(n, B) = sum_{t in B} L(n, t)``.
Conversely every such partition gives a set of networks no worse than the partition
says. The search therefore runs over partitions (docs/select.md, "Method"):

* **fronts**: for each block B (``2^T`` of them), the networks that solve all of B,
  reduced to those on the (cost, ``L(n, B)``) Pareto front: a network that another
  beats on ``L(n, B)`` (by more than rounding can explain) at no more cost is never
  needed for B, since swapping it makes every solution strictly better; nor is a later
  row with the same cost and the same loss on every task of B (the earlier row wins
  the tie), nor, when sums of losses are exact (integer losses), one of the same
  ``L(n, B)`` that costs more or comes later;
* **search**: depth first, each node a partial partition (the tasks ``R`` still
  uncovered, the budget left); its children choose the block of ``R`` that holds
  ``R``'s lowest task and a network of that block's front that fits the budget left
  (each partition is reached once), best bound first;
* **bounds** for the rest ``R'`` of a child and the budget ``b'`` left to it, all
  precomputed once per table (``O(3^T)`` work each) and looked up per child:

  - Lagrangian: for any ``lambda >= 0``, every partition of ``R'`` that fits ``b'``
    has loss ``>= G_lambda(R') - lambda b'``, where ``G_lambda(U)`` is the least
    ``sum_B [L(n_B, B) + lambda c_n]`` over the partitions of U (a dynamic program over
    subsets); ``lambda*`` maximises the bound at the root, and a spread of multipliers
    around it serves the subproblems. This is the LP bound of the partition model,
    tight when many (cost, loss) combinations exist, as with continuous costs;
  - budget grid (:class:`~branchnet.selection.budget_partition.BudgetPartitionBound`),
    when the costs are multiples of a grid step: exact for those costs (the paper's 1
    and 0.5), where the Lagrangian bound has a gap;
  - cover: the cheapest partition of ``R'`` must fit ``b'``.

* **first solutions** before the search: the cheapest cover, the partitions of the
  Lagrangian multipliers that fit, the grid's best partition.

A child is dropped when its bound exceeds the best total loss by more than rounding can
explain, or when it provably can at best tie the best's loss and then loses on cost or
on the number of networks (:meth:`PartitionSearch._ties_lost`); every other solution of
equal loss is compared on cost, the number of networks, then the rows (docs/design.md,
"Selection"). With a time or node limit the search stops early and reports the best
solution with the least bound of the partial partitions it has not explored (a proven
lower bound on the optimum).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from branchnet.selection.budget_partition import (BudgetPartitionBound, _layers, _subset_bits, blocks_of, grid_step,
                                                  max_levels)
from branchnet.selection.solution import BUDGET_RTOL, fits, relative_gap, solution_key, total

#: Networks whose blocks are enumerated together when the fronts are built (cheapest first).
_CHUNK_NETWORKS = 256

#: Multipliers of lambda* whose Lagrangian tables bound the subproblems.
_LAMBDA_SPREAD = (0.0, 0.125, 0.25, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0)

#: How often (seconds) the progress callback is called.
PROGRESS_EVERY = 0.25


@dataclass(frozen=True)
class SearchStatus:
    """Where an exact search stands: the incumbent, the proven lower bound, the work done.

    Attributes:
        incumbent: the best total loss found so far (None before the first solution).
        lower_bound: no solution has a total loss below this (proven).
        nodes: nodes expanded.
        elapsed: seconds since the search started.
        done: whether the search has finished (proved the incumbent optimal, or stopped).
        budget: the budget searched (None when not given to :class:`Limits`).
    """

    incumbent: float | None
    lower_bound: float
    nodes: int
    elapsed: float
    done: bool = False
    budget: float | None = None

    @property
    def gap(self) -> float | None:
        """:func:`relative_gap` of the incumbent and the lower bound (None before the first solution)."""
        return None if self.incumbent is None else relative_gap(self.incumbent, self.lower_bound)


@dataclass(frozen=True)
class SearchResult:
    """What an exact search returns.

    Attributes:
        rows: the best solution's rows (sorted), None when there is no solution.
        optimal: whether the search finished, so ``rows`` is proven optimal.
        lower_bound: a proven lower bound on the optimal total loss (the optimum itself
            when ``optimal``).
        nodes: nodes expanded.
    """

    rows: list[int] | None
    optimal: bool
    lower_bound: float
    nodes: int


class Limits:
    """When a search must stop (a deadline, a node count) and whom to tell how it stands.

    Args:
        time_limit: seconds from now (None: no limit).
        node_limit: nodes to expand at most (None: no limit); for tests, deterministic.
        progress: called with a :class:`SearchStatus` about every :data:`PROGRESS_EVERY`
            seconds and once at the end.
        budget: the budget searched, passed on in each :class:`SearchStatus`.
    """

    def __init__(self, time_limit: float | None = None, node_limit: int | None = None,
                 progress: Callable[[SearchStatus], None] | None = None, budget: float | None = None) -> None:
        self.budget = budget
        self.start = time.monotonic()
        self.deadline = None if time_limit is None else self.start + float(time_limit)
        self.node_limit = node_limit
        self.progress = progress
        self._next_report = self.start + PROGRESS_EVERY

    def reached(self, nodes: int) -> bool:
        """Whether the search must stop after ``nodes`` nodes."""
        if self.node_limit is not None and nodes >= self.node_limit:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def report(self, incumbent: float | None, lower_bound: float, nodes: int, done: bool = False) -> None:
        """Call the progress callback if it is due (always when ``done``)."""
        if self.progress is None:
            return
        now = time.monotonic()
        if done or now >= self._next_report:
            self._next_report = now + PROGRESS_EVERY
            self.progress(SearchStatus(incumbent, lower_bound, nodes, now - self.start, done, self.budget))


def _segment_min_before(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """For sorted ``segment`` ids: the least of ``values`` before each position in its segment (inf: none)."""
    incl = values.copy()
    if values.size == 0:
        return incl
    _, counts = np.unique(segment, return_counts=True)
    longest, shift = int(counts.max()), 1
    while shift < longest:  # Hillis-Steele scan: the minimum over the 2*shift last positions
        same = segment[shift:] == segment[:-shift]
        np.minimum(incl[shift:], np.where(same, incl[:-shift], np.inf), out=incl[shift:])
        shift *= 2
    out = np.full(values.size, np.inf)
    same = segment[1:] == segment[:-1]
    out[1:] = np.where(same, incl[:-1], np.inf)
    return out


def _sub_blocks(positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every non-empty sub-block of each network's tasks and its loss, (g, 2^s - 1) each.

    Args:
        positions: (g, s) the tasks of g networks of s tasks each; values: (g, s) their losses.
    """
    g, size = positions.shape
    block = np.zeros((g, 1 << size), dtype=np.int64)
    loss = np.zeros((g, 1 << size))
    for k in range(size):  # the sub-blocks holding task k: those without it, plus it
        half = 1 << k
        np.bitwise_or(block[:, :half], np.int64(1) << positions[:, k:k + 1], out=block[:, half:2 * half])
        np.add(loss[:, :half], values[:, k:k + 1], out=loss[:, half:2 * half])
    return block[:, 1:], loss[:, 1:]


def _sums_exact(losses: np.ndarray) -> bool:
    """Whether every sum of losses of distinct tasks is exact in floating point.

    True when the losses are multiples of ``2^-20`` (integers, halves, ...) whose per-task
    maxima add up to less than ``2^32``: then every such sum has fewer than 53 significant bits.
    """
    finite = losses[np.isfinite(losses)]
    if finite.size == 0:
        return True
    scaled = finite * 2.0 ** 20
    return bool(np.all(scaled == np.round(scaled))) and \
        float(np.where(np.isfinite(losses), losses, 0.0).max(axis=0).sum()) < 2.0 ** 32


class BlockFronts:
    """Each block's Pareto front of networks: (cost, block loss) (see the module docstring).

    Attributes:
        block, cost, loss, row: per front entry, sorted by block, then cost, then loss
            (numpy arrays, (E,)).
        start, count: where each block's entries are, (2^T,) each.
    """

    def __init__(self, losses: np.ndarray, costs: np.ndarray, budget: float, slack: float) -> None:
        n_tasks = losses.shape[1]
        self.n_tasks = n_tasks
        solves = np.isfinite(losses)
        sizes = solves.sum(axis=1)
        finite = np.where(solves, losses, 0.0)
        ref_total = float(finite.max(axis=0).sum()) if finite.size else 0.0
        # Block sums are taken in floating point: a network is dropped from a block's
        # front only when another beats it by more than this, far above their rounding.
        self.tol = 1e-12 * (1.0 + ref_total)
        self.scale = max(ref_total, 1e-12)  # the largest total loss any partition can have
        order = np.flatnonzero((costs <= budget + slack) & (sizes > 0))
        order = order[np.argsort(costs[order], kind="stable")]
        exact = _sums_exact(losses)
        clear = 1e-12 * (1.0 + float(budget))  # a cost this much above another is clearly more
        best = np.full(1 << n_tasks, np.inf)  # least block loss of the networks handled so far
        best_cost = np.full(1 << n_tasks, np.inf)  # the least cost at that loss
        kept_block, kept_loss, kept_row = [], [], []
        for lo in range(0, order.size, _CHUNK_NETWORKS):
            chunk = order[lo:lo + _CHUNK_NETWORKS]
            blocks, values, rows = [], [], []
            for size in np.unique(sizes[chunk]).tolist():
                group = chunk[sizes[chunk] == size]
                positions = np.nonzero(solves[group])[1].reshape(group.size, size)
                block, value = _sub_blocks(positions, losses[group[:, None], positions])  # (g, 2^s - 1) each
                # Every network handled before costs no more: one beating this one on the
                # block by more than the tolerance makes it useless there (with exact sums,
                # also one as good that costs clearly less; see below).
                if exact:  # networks handled before of equal cost come earlier in the table
                    mine, theirs = costs[group][:, None], best_cost[block]
                    ok = (value < best[block]) | ((value == best[block]) & (
                        (mine < theirs) | ((mine > theirs) & (mine <= theirs + clear))))
                else:
                    ok = value <= best[block] + self.tol
                blocks.append(block[ok])
                values.append(value[ok])
                rows.append(np.broadcast_to(group[:, None], block.shape)[ok])
            blocks, values, rows = np.concatenate(blocks), np.concatenate(values), np.concatenate(rows)
            before = best.copy()
            np.minimum.at(best, blocks, values)
            best_cost[best < before] = np.inf
            attain = values == best[blocks]
            np.minimum.at(best_cost, blocks[attain], costs[rows[attain]])
            kept_block.append(blocks)
            kept_loss.append(values)
            kept_row.append(rows)
        block = np.concatenate(kept_block) if kept_block else np.zeros(0, np.int64)
        loss = np.concatenate(kept_loss) if kept_loss else np.zeros(0)
        row = np.concatenate(kept_row) if kept_row else np.zeros(0, np.int64)
        cost = costs[row]
        # The exact fronts: sorted by block, cost, loss (then row), an entry is kept unless
        # an entry before it in its block (no dearer) is better by more than the tolerance.
        order = np.lexsort((row, loss, cost, block))
        block, loss, row, cost = block[order], loss[order], row[order], cost[order]
        keep = loss <= _segment_min_before(loss, block) + self.tol
        block, loss, row, cost = block[keep], loss[keep], row[keep], cost[keep]
        # Exact twins: a network with the same cost and the same loss on every task of the
        # block as an earlier row is never needed there (the earlier row gives the same
        # loss and cost, and the earlier rows win the tie). Tables with rounded numbers have
        # many (every task's networks of loss 0.00 at cost 0.1).
        twin = np.zeros(block.size, dtype=bool)
        same = np.flatnonzero((block[1:] == block[:-1]) & (cost[1:] == cost[:-1]) & (loss[1:] == loss[:-1]))
        if same.size:
            group = np.unique(np.concatenate([same, same + 1]))  # entries tied with a neighbour
            inside = (block[group, None] >> np.arange(n_tasks)) & 1 == 1
            values = np.where(inside, losses[row[group]], np.inf)
            key = np.column_stack([block[group].astype(np.float64), cost[group], values])
            order = np.lexsort((row[group],) + tuple(key.T[::-1]))  # by key, then row
            sorted_key = key[order]
            repeat = np.zeros(group.size, dtype=bool)
            repeat[1:] = (sorted_key[1:] == sorted_key[:-1]).all(axis=1)
            twin[group[order[repeat]]] = True
        block, loss, row, cost = block[~twin], loss[~twin], row[~twin], cost[~twin]
        if exact:
            # Block sums are exact (integer losses, say): an entry of the same block loss as
            # the block's cheapest of that loss (the earliest row among equal costs) is never
            # needed when it costs clearly more or comes later: swapping it for that one
            # keeps the total loss exactly and lowers the cost, or keeps it and wins on rows.
            order = np.lexsort((row, cost, loss, block))
            b, l, c, r = block[order], loss[order], cost[order], row[order]
            first = np.ones(b.size, dtype=bool)
            first[1:] = (b[1:] != b[:-1]) | (l[1:] != l[:-1])
            lead = np.maximum.accumulate(np.where(first, np.arange(b.size), 0))
            drop = ~first & ((c > c[lead] + clear) | (r > r[lead]))
            keep = np.sort(order[~drop])
            block, loss, row, cost = block[keep], loss[keep], row[keep], cost[keep]
        self.block, self.loss, self.row, self.cost = block, loss, row, cost
        self.count = np.bincount(self.block, minlength=1 << n_tasks)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]]).astype(np.int64)
        self.present = np.flatnonzero(self.count)
        self._entries: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.block.size)

    def block_min(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per block, the least of ``values`` (E,) over its entries and the entry (inf / -1: none)."""
        out = np.full(1 << self.n_tasks, np.inf)
        arg = np.full(1 << self.n_tasks, -1, dtype=np.int64)
        if self.present.size:
            starts = self.start[self.present]
            out[self.present] = np.minimum.reduceat(values, starts)
            # the first entry attaining it: the cheapest (entries are sorted by cost)
            hit = np.flatnonzero(values == np.repeat(out[self.present], self.count[self.present]))
            first = np.searchsorted(hit, starts)
            arg[self.present] = hit[first]
        return out, arg

    def entries(self, uncovered: int) -> np.ndarray:
        """The entries of the blocks of ``uncovered`` that hold its lowest task (cached)."""
        got = self._entries.get(uncovered)
        if got is None:
            blocks = blocks_of(uncovered)
            blocks = blocks[self.count[blocks] > 0]
            counts = self.count[blocks]
            offsets = np.repeat(self.start[blocks] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            got = np.arange(int(counts.sum()), dtype=np.int64) + offsets
            self._entries[uncovered] = got
        return got


class SubsetDP:
    """``G(U) = min over partitions of U of sum_B w(B)`` for every task subset U (``O(3^T)``)."""

    def __init__(self, n_tasks: int) -> None:
        self.n_tasks = n_tasks
        self.layers = [(subsets, blocks, starts, np.repeat(subsets, np.diff(np.append(starts, blocks.size))))
                       for subsets, blocks, starts in _layers(n_tasks)]

    def table(self, w: np.ndarray) -> np.ndarray:
        """``G`` (2^T,) for block values ``w`` (2^T,; inf: no network for the block)."""
        g = np.full(1 << self.n_tasks, np.inf)
        g[0] = 0.0
        for subsets, blocks, starts, owner in self.layers:
            g[subsets] = np.minimum.reduceat(w[blocks] + g[owner ^ blocks], starts)
        return g

    @staticmethod
    def partition(g: np.ndarray, w: np.ndarray, u: int) -> list[int]:
        """The blocks of a partition of ``u`` attaining ``g[u]`` (empty when there is none)."""
        out = []
        if not np.isfinite(g[u]):
            return out
        while u:
            blocks = blocks_of(u)
            b = int(blocks[int(np.argmin(w[blocks] + g[u ^ blocks]))])
            out.append(b)
            u ^= b
        return out


class PartitionSearch:
    """The exact partition search for one table, reusable for every budget up to ``budget``.

    Args:
        losses: float (M, T), ``inf`` where a network does not solve a task (or is
            above the task's limit).
        costs: float (M,), >= 0.
        budget: the largest budget it will be asked for.
    """

    def __init__(self, losses: np.ndarray, costs: np.ndarray, budget: float) -> None:
        self.losses = np.ascontiguousarray(losses, dtype=np.float64)
        self.costs = np.asarray(costs, dtype=np.float64)
        self.n_tasks = self.losses.shape[1]
        self.full = (1 << self.n_tasks) - 1
        self.max_budget = float(budget)
        self.slack = 2 * BUDGET_RTOL * max(1.0, abs(self.max_budget))
        self.fronts = BlockFronts(self.losses, self.costs, self.max_budget, self.slack)
        self.dp = SubsetDP(self.n_tasks)
        f = self.fronts
        # cheapest cover of every subset (the first entry of each front is its cheapest network)
        self._w_cost, self._arg_cost = f.block_min(f.cost)
        self.cover = self.dp.table(self._w_cost)
        self._lagrange: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.grid: BudgetPartitionBound | None = None
        q, exact = grid_step(self.costs, self.max_budget, max_levels(self.n_tasks))
        if exact:  # costs on a grid: the partition bound priced on it is exact
            self.grid = BudgetPartitionBound(self.losses, self.costs, self.max_budget, self.slack,
                                             blocks=(self.fronts.block, self.fronts.loss, self.fronts.row))
        self.nodes = 0
        # floor[t]: the least loss on t of any network that fits; inside[B, t]: whether t is in B
        self.floor = np.where(self.costs[:, None] <= self.max_budget + self.slack, self.losses, np.inf).min(axis=0)
        self._inside = _subset_bits(self.n_tasks).astype(bool)

    # -- Lagrangian tables ----------------------------------------------------------------
    def lagrange(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(G_lambda, w_lambda, entry)`` for multiplier ``lam`` (cached)."""
        got = self._lagrange.get(lam)
        if got is None:
            f = self.fronts
            w, arg = f.block_min(f.loss + lam * f.cost)
            got = (self.dp.table(w), w, arg)
            self._lagrange[lam] = got
        return got

    def _partition_rows(self, lam: float | None) -> tuple[list[int], float, float]:
        """A partition of all tasks of least ``loss + lam cost`` (lam None: least cost): rows, loss, cost."""
        if lam is None:
            g, w, arg = self.cover, self._w_cost, self._arg_cost
        else:
            g, w, arg = self.lagrange(lam)
        blocks = SubsetDP.partition(g, w, self.full)
        entries = arg[blocks]
        f = self.fronts
        return f.row[entries].tolist(), float(f.loss[entries].sum()), float(f.cost[entries].sum())

    def multipliers(self, budget: float) -> tuple[list[float], list[list[int]]]:
        """``lambda*`` maximising the root's Lagrangian bound for ``budget``, a spread around it,
        and the partitions met on the way that fit (first solutions)."""
        limit = budget + self.slack
        fitting: list[list[int]] = []
        rows0, loss0, cost0 = self._partition_rows(0.0)
        if cost0 <= limit:  # the least loss ignoring the budget fits: lambda* = 0
            return [0.0], [rows0]
        rows_c, loss_c, cost_c = self._partition_rows(None)
        fitting.append(rows_c)
        # The bound is the lower convex hull of (cost, loss) over partitions at the budget;
        # walk its breakpoints between a partition over the budget and one within it.
        lo, hi = (loss0, cost0), (loss_c, cost_c)
        lam = 0.0
        for _ in range(60):
            if hi[1] >= lo[1]:
                break
            lam = (hi[0] - lo[0]) / (lo[1] - hi[1])
            if not math.isfinite(lam) or lam <= 0:
                break
            rows, loss, cost = self._partition_rows(lam)
            line = lo[0] + lam * lo[1]
            if loss + lam * cost >= line - 1e-12 * (1.0 + abs(line)):
                break  # no partition below the line: lam is the best multiplier
            if cost <= limit:
                fitting.append(rows)
                hi = (loss, cost)
            else:
                lo = (loss, cost)
        lam = max(lam, 0.0)
        return sorted({lam * m for m in _LAMBDA_SPREAD}), fitting

    def _tie_tables(self, lams: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Multipliers ``(lambda, kappa)`` and subset tables of ``L + lambda c + kappa`` for :meth:`_ties_lost`."""
        loss_scale, cost_scale = self.fronts.scale, max(self.budget, 1e-12)
        pairs = [(lam, 0.0) for lam in sorted({lam for lam in lams if lam > 0})]
        pairs += [(a * loss_scale / cost_scale, 0.0) for a in (1e-3, 1e-6)]
        pairs += [(a * loss_scale / cost_scale, b * loss_scale) for a, b in ((1e-3, 1e-6), (1e-6, 1e-9))]
        tables = []
        for lam, kappa in pairs:
            g = self.lagrange(lam)[0]
            if kappa:
                w = self.lagrange(lam)[1] + kappa
                g = self.dp.table(w)
            tables.append(g)
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), np.stack(tables)

    # -- the search ------------------------------------------------------------------------
    def solve(self, budget: float, limits: Limits | None = None) -> SearchResult:
        """The best rows within ``budget`` (<= the constructor's), or as far as ``limits`` allow."""
        limits = limits or Limits()
        self.budget = float(budget)
        slack = 2 * BUDGET_RTOL * max(1.0, abs(self.budget))
        self.node_slack = slack
        self.best_key: tuple | None = None
        self.best_rows: list[int] | None = None
        self.nodes = 0
        if not self.cover[self.full] <= self.budget + slack:
            return SearchResult(None, True, math.inf, 0)
        lams, fitting = self.multipliers(self.budget)
        self._g = np.stack([self.lagrange(lam)[0] for lam in lams])  # (L, 2^T)
        self._lams = np.array(lams)
        self._tie_lams, self._tie_kappas, self._tie_g = self._tie_tables(lams)
        for rows in fitting:
            self._offer(rows)
        if self.grid is not None:
            picked = self.grid.solution(self.budget)
            if picked is not None:
                self._offer(picked)

        # A frame holds a node's children, best bound first: [rest, left, loss, cost, row,
        # bound, block, the node's rows, the node's served losses per task, next child].
        frames: list[list] = []
        self._expand(frames, self.full, self.budget, 0.0, 0.0, [], np.full(self.n_tasks, np.inf))
        stopped = False
        while frames:
            frame = frames[-1]
            rest, left, loss, cost, row, bound, block, parent, served, i = frame
            if i >= bound.size or (self.best_key is not None and bound[i] > self.best_key[0] + self._margin()):
                frames.pop()
                continue
            if limits.reached(self.nodes):
                stopped = True  # child i, not expanded, still counts for the bound
                break
            frame[9] = i + 1
            if limits.progress is not None:
                limits.report(self._incumbent(), self._open_bound(frames), self.nodes)
            child = served.copy()
            inside = self._inside[block[i]]
            child[inside] = self.losses[row[i], inside]
            self._expand(frames, int(rest[i]), float(left[i]), float(loss[i]), float(cost[i]),
                         parent + [int(row[i])], child)
        lower = self._open_bound(frames) if stopped else (self._incumbent() if self.best_key else math.inf)
        if self.best_key is not None:
            lower = min(lower, self.best_key[0])
        limits.report(self._incumbent(), lower, self.nodes, done=True)
        return SearchResult(self.best_rows, not stopped, lower, self.nodes)

    def _incumbent(self) -> float | None:
        return None if self.best_key is None else self.best_key[0]

    def _margin(self) -> float:
        # The bounds are float sums, not exactly rounded (their error is below 1e-13 of the
        # totals): a child is dropped only when its bound is above the best by more than that.
        return 1e-12 * (1.0 + abs(self.best_key[0]))

    def _open_bound(self, frames: list[list]) -> float:
        """The least bound of the children not yet expanded and the best loss: a lower bound on the optimum."""
        lower = min((float(frame[5][frame[9]]) for frame in frames if frame[9] < frame[5].size), default=math.inf)
        return lower if self.best_key is None else min(lower, self.best_key[0])

    def _offer(self, rows: list[int]) -> None:
        rows = sorted(set(int(r) for r in rows))
        cost = total(self.costs[rows].tolist())
        if not rows or not fits(cost, self.budget):
            return
        served = self.losses[rows].min(axis=0)
        if not np.isfinite(served).all():
            return
        key = solution_key(total(served.tolist()), cost, rows)
        if self.best_key is None or key < self.best_key:
            self.best_key, self.best_rows = key, rows

    def _bound(self, rest: np.ndarray, left: np.ndarray) -> np.ndarray:
        """A lower bound on the least loss of covering ``rest`` within ``left`` (K,), inf: cannot."""
        room = left + self.node_slack
        values = (self._g[:, rest] - self._lams[:, None] * room[None, :]).max(axis=0)
        values -= 1e-12 * (1.0 + np.abs(values) + self._lams[-1] * np.abs(room))  # their rounding
        if self.grid is not None:
            values = np.maximum(values, self.grid.h[self.grid.levels_of(left), rest])
        values[self.cover[rest] > room * (1 + 1e-12) + 1e-300] = np.inf
        values[rest == 0] = 0.0
        return values

    def _expand(self, frames: list[list], uncovered: int, left: float, loss: float, cost: float,
                rows: list[int], served: np.ndarray) -> None:
        """Bound the children of a node; offer the complete ones, push the others as a frame.

        Args:
            uncovered: the tasks the node's blocks leave (a bit mask); left: its budget left;
            loss, cost: its blocks' total loss and cost; rows: its networks; served: the
                loss of each task its blocks cover (inf: not covered).
        """
        self.nodes += 1
        f = self.fronts
        e = f.entries(uncovered)
        e = e[f.cost[e] <= left + self.node_slack]
        if rows:
            e = e[~np.isin(f.row[e], rows)]
        if e.size == 0:
            return
        rest = uncovered ^ f.block[e]
        child_left = left - f.cost[e]
        child_loss = loss + f.loss[e]
        bound = child_loss + self._bound(rest, child_left)
        ok = np.isfinite(bound)
        if self.best_key is not None:
            ok &= bound <= self.best_key[0] + self._margin()
        e, rest, child_left, child_loss, bound = e[ok], rest[ok], child_left[ok], child_loss[ok], bound[ok]
        done = rest == 0
        if done.any():  # complete partitions: offer the few that can be best
            approx = child_loss[done]
            least = approx.min()
            near = np.flatnonzero(approx <= least + 1e-12 * (1.0 + abs(least)))
            for j in near.tolist():
                self._offer(rows + [int(f.row[e[done][j]])])
            e, rest, child_left, child_loss, bound = e[~done], rest[~done], child_left[~done], \
                child_loss[~done], bound[~done]
            if self.best_key is not None:
                keep = bound <= self.best_key[0] + self._margin()
                e, rest, child_left, child_loss, bound = e[keep], rest[keep], child_left[keep], \
                    child_loss[keep], bound[keep]
        if e.size and self.best_key is not None:
            keep = ~self._ties_lost(e, rest, child_loss, cost + f.cost[e], len(rows) + 1, served)
            e, rest, child_left, child_loss, bound = e[keep], rest[keep], child_left[keep], child_loss[keep], \
                bound[keep]
        if e.size == 0:
            return
        order = np.lexsort((e, f.cost[e], bound))
        e = e[order]
        frames.append([rest[order], child_left[order], child_loss[order], cost + f.cost[e], f.row[e], bound[order],
                       f.block[e], rows, served, 0])

    def _ties_lost(self, e: np.ndarray, rest: np.ndarray, loss: np.ndarray, cost: np.ndarray, count: int,
                   served: np.ndarray) -> np.ndarray:
        """Children all of whose partitions at best tie the best's loss and lose on cost or count (K,) bool.

        The loss bounds are not exactly rounded, so a child within rounding of the best
        loss is kept even when it can only tie it; on tables with many equal totals (many
        losses of 0, losses to two decimals) whole subtrees would be searched for the
        tie-breaks. Such a child is dropped when both hold:

        1. no partition below it has a smaller total loss: the exactly rounded sum
           (``math.fsum``) of the losses its blocks serve and, for every task left, the
           least loss any network has on it, is at least the best's total (rounding to
           nearest is monotone, so every total below is too);
        2. none of those with the best's loss has its cost, or also its number of
           networks: for ``lambda > 0``, ``kappa >= 0`` every partition P below has
           ``L(P) + lambda c(P) + kappa n(P) >= loss + lambda cost + kappa count +
           G(rest)``, ``G`` the subset table of the block values ``L + lambda c + kappa``;
           with ``L(P) <= best`` that gives ``c(P) >= cost + (loss + G - best) / lambda``
           (``kappa = 0``), and with also ``c(P) <= best cost``, ``n(P) >= (loss + lambda
           (cost - best cost) + kappa count + G - best) / kappa``. Either above the best's
           (by more than rounding) settles it. Small multipliers make these the cost and
           the count of the cheapest completions among those of least loss.

        Args:
            e: the children's front entries; rest: the tasks each leaves; loss, cost: each
                one's blocks' total loss and cost; count: their number of networks;
            served: the node's served loss per task (inf: not covered).
        """
        best_loss, best_cost, best_count = self.best_key[0], self.best_key[1], self.best_key[2]
        out = np.zeros(e.size, dtype=bool)
        g = self._tie_g[:, rest]  # (P, K)
        lams, kappas = self._tie_lams[:, None], self._tie_kappas[:, None]
        # the left side less the right side, made smaller by more than its rounding
        excess = loss[None, :] + g - best_loss + kappas * count
        excess -= 1e-12 * (1.0 + np.abs(loss)[None, :] + np.abs(g) + abs(best_loss) + kappas * count)
        by_cost = kappas[:, 0] == 0
        dear = (cost[None, :] + excess[by_cost] / lams[by_cost] >
                best_cost + 1e-12 * (1.0 + abs(best_cost) + np.abs(cost))[None, :]).any(axis=0)
        costs = lams[~by_cost] * (cost - best_cost)[None, :]
        costs -= 1e-12 * lams[~by_cost] * (1.0 + np.abs(cost) + abs(best_cost))[None, :]
        more = ((excess[~by_cost] + costs) / kappas[~by_cost] > best_count).any(axis=0)
        candidates = np.flatnonzero(dear | more)
        if candidates.size == 0:
            return out
        # 1: the served losses, with each task left at its floor, summed exactly
        f = self.fronts
        inside = self._inside[f.block[e[candidates]]]  # (k, T)
        values = np.where(inside, self.losses[f.row[e[candidates]]], served[None, :])
        values = np.where(np.isfinite(values), values, self.floor[None, :])
        if best_loss <= 0:  # losses are >= 0: nothing is below a best of 0
            out[candidates] = True
            return out
        close = values.sum(axis=1) >= best_loss - self._margin()  # the others surely fall short
        for j, row in zip(candidates[close].tolist(), values[close].tolist()):
            out[j] = math.fsum(row) >= best_loss
        return out

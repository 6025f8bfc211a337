"""Populations of trees: every tree of a budget window, or a uniform random sample of them.

The baselines of docs/design.md, "Evaluation": the trees "of budget B" are the valid trees
(chains of nested partitions) with ``0.9 B <= params(tree) <= B`` (:func:`budget_window`);
random trees are drawn uniformly from them, never the all-shared or the all-separate tree;
the exhaustive population is every tree (the paper's Fig. 5 trains all groupings that branch
in the last three stages: ``branch_stages=3``).

Params depend on a tree only through its group counts k (``sum_d k_d stage_params[d] +
sum_t head_params[t]``), and the number of trees with counts k has a closed form
(:mod:`branchnet.tree.chains`). So a :class:`TreeSpace` lists the count vectors inside the
window with their exact number of trees, numbers all its trees 0..size-1 (count vectors by
params, then each vector's chains by :func:`~branchnet.tree.chains.unrank_chain`), and a
uniform sample of trees is a uniform sample of ranks: exact at any N, no rejection, seeded
(:class:`random.Random`, exact on integers of any size) and so deterministic per seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from branchnet.affinity import AffinityData
from branchnet.errors import BadInput
from branchnet.tree.chains import count_chains, unrank_chain
from branchnet.tree.record import Partitions, Tree
from branchnet.units import format_count

#: The lower edge of the budget window as a share of the budget (docs/design.md, "Evaluation").
WINDOW_FRACTION = 0.9
#: Most trees an exhaustive listing gives before it refuses (see :func:`all_trees`).
EXHAUSTIVE_LIMIT = 10_000


def budget_window(budget: float, fraction: float = WINDOW_FRACTION) -> tuple[float, float]:
    """``(0.9 B, B)``: the params of the trees "of budget B"."""
    if not np.isfinite(budget) or budget <= 0:
        raise BadInput(f"params budget {budget!r} must be a positive number")
    return fraction * float(budget), float(budget)


def _inside(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo <= values <= hi`` elementwise, up to float rounding (as the search's budget check)."""
    return (values >= lo - 1e-9 * max(1.0, abs(lo))) & (values <= hi + 1e-9 * max(1.0, abs(hi)))


@dataclass
class TreeSpace:
    """The trees of N tasks and D stages in a params window, numbered 0..size-1.

    Attributes:
        tasks: the N task names (partitions are of these names, canonical order).
        stage_params: (D,) params of one copy of each stage.
        head_params: (N,) params of each head.
        window: ``(low, high)`` params of the whole network, or None for every tree.
        branch_stages: only trees whose first ``D - branch_stages`` stages are shared by all
            tasks (they branch in the last ``branch_stages`` stages), or None for every tree.
        include_ends: whether the all-shared and the all-separate trees belong to the space.

    After construction: ``vectors`` (M, D) the count vectors with trees in the space,
    ordered by params then lexicographically; ``counts`` (M,) their numbers of trees
    (Python ints); ``size`` the total.
    """

    tasks: list[str]
    stage_params: np.ndarray
    head_params: np.ndarray
    window: tuple[float, float] | None = None
    branch_stages: int | None = None
    include_ends: bool = True
    vectors: np.ndarray = field(init=False)
    counts: list[int] = field(init=False)
    params: np.ndarray = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        self.stage_params = np.asarray(self.stage_params, dtype=np.float64).reshape(-1)
        self.head_params = np.asarray(self.head_params, dtype=np.float64).reshape(-1)
        n, depth = len(self.tasks), len(self.stage_params)
        if n < 1 or depth < 1:
            raise BadInput("a tree space needs at least one task and one stage")
        if len(self.head_params) != n:
            raise BadInput(f"head_params has {len(self.head_params)} values but there are {n} tasks")
        shared_stages = 0
        if self.branch_stages is not None:
            if not 1 <= int(self.branch_stages) <= depth:
                raise BadInput(f"--branch-stages {self.branch_stages} must lie in 1..{depth} (the number of "
                               "stages, counted from the deepest, in which the trees may branch)")
            shared_stages = depth - int(self.branch_stages)
        every = np.array(list(itertools.combinations_with_replacement(range(1, n + 1), depth)),
                         dtype=np.int64).reshape(-1, depth)
        keep = np.all(every[:, :shared_stages] == 1, axis=1)
        if not self.include_ends:
            keep &= ~np.all(every == 1, axis=1) & ~np.all(every == n, axis=1)
        every = every[keep]
        params = every @ self.stage_params + self.head_params.sum()
        if self.window is not None:
            lo, hi = self.window
            inside = _inside(params, lo, hi)
            every, params = every[inside], params[inside]
        order = np.lexsort(tuple(every[:, j] for j in range(depth - 1, -1, -1)) + (params,))
        self.vectors, self.params = every[order], params[order]
        self.counts = [count_chains(n, k) for k in self.vectors]
        self._offsets = list(itertools.accumulate(self.counts, initial=0))
        self.size = self._offsets[-1]

    @property
    def depth(self) -> int:
        return len(self.stage_params)

    def partitions(self, rank: int) -> Partitions:
        """The tree of rank ``rank`` in ``[0, size)`` as canonical partitions of task names."""
        from bisect import bisect_right

        if not 0 <= rank < self.size:
            raise ValueError(f"rank {rank} outside [0, {self.size})")
        row = bisect_right(self._offsets, rank) - 1
        labels = unrank_chain(len(self.tasks), self.vectors[row], rank - self._offsets[row])
        out: Partitions = []
        for d in range(self.depth):
            groups: list[list[str]] = [[] for _ in range(int(labels[d].max()) + 1)]
            for t, g in enumerate(labels[d]):
                groups[g].append(self.tasks[t])
            out.append(groups)
        return out

    def sample(self, count: int, seed: int) -> list[Partitions]:
        """``min(count, size)`` distinct trees drawn uniformly (a uniform random subset), in rank
        order (by params); every tree when the space holds no more than ``count``."""
        if count <= 0:
            raise BadInput(f"--random {count}: ask for at least one random tree")
        if self.size <= count:
            return [self.partitions(r) for r in range(self.size)]
        rng = random.Random(seed)
        if self.size < 2**62:
            ranks = rng.sample(range(self.size), count)
        else:  # beyond what range() can sample: draw until count distinct (collisions are all but impossible)
            seen: set[int] = set()
            while len(seen) < count:
                seen.add(rng.randrange(self.size))
            ranks = list(seen)
        return [self.partitions(r) for r in sorted(ranks)]

    def draw(self, count: int, seed: int) -> list[Partitions]:
        """``count`` independent uniform draws (with replacement), in draw order."""
        if self.size == 0:
            raise BadInput("no tree to draw: the space is empty")
        rng = random.Random(seed)
        return [self.partitions(rng.randrange(self.size)) for _ in range(count)]

    def all(self) -> list[Partitions]:
        """Every tree of the space, in rank order."""
        return [self.partitions(r) for r in range(self.size)]


def _costs(affinity: AffinityData, costs: dict[str, Any] | None) -> dict[str, np.ndarray | None]:
    from branchnet.tree.search import resolve_costs

    return resolve_costs(affinity, **{k: v for k, v in (costs or {}).items() if v is not None})


def random_space(affinity: AffinityData, params_budget: float, costs: dict[str, Any] | None = None,
                 branch_stages: int | None = None) -> TreeSpace:
    """The random-tree population of budget B: the window's trees, ends excluded.

    Raises :class:`BadInput` when the window holds no such tree, naming the window and the
    params of the nearest trees outside it.
    """
    c = _costs(affinity, costs)
    window = budget_window(params_budget)
    space = TreeSpace(affinity.tasks, c["stage_params"], c["head_params"], window, branch_stages,
                      include_ends=False)
    if space.size == 0:
        whole = TreeSpace(affinity.tasks, c["stage_params"], c["head_params"], None, branch_stages,
                          include_ends=False)
        below = [float(p) for p in whole.params if p < window[0]]
        above = [float(p) for p in whole.params if p > window[1]]
        near = []
        if below:
            near.append(f"the largest below has {format_count(max(below))} params")
        if above:
            near.append(f"the smallest above has {format_count(min(above))}")
        hint = ("; " + " and ".join(near)) if near else ""
        raise BadInput(f"the budget window [{format_count(window[0])}, {format_count(window[1])}] params "
                       f"(0.9 B to B) holds no tree other than the all-shared and all-separate ones{hint}; "
                       "choose a budget whose window holds trees")
    return space


def budgets_with_trees(tasks: Sequence[str], stage_params: Any, head_params: Any,
                       budgets: Sequence[int]) -> tuple[list[int], list[str]]:
    """``budgets`` with each one whose window ``[0.9 B, B]`` holds no tree (ends excluded) moved to
    the params of the smallest tree above it (else the largest below), and a note per move.

    What ``--sweep K`` does with its evenly spaced budgets, so that every budget of a sweep has a
    population of trees; a budget the user names is never moved (its empty window is an error).
    """
    whole = TreeSpace(list(tasks), stage_params, head_params, None, include_ends=False)
    sizes = sorted({int(round(float(p))) for p in whole.params})
    out, notes = [], []
    for budget in budgets:
        window = budget_window(budget)
        if any(_inside(np.array([float(p)]), *window)[0] for p in sizes):
            out.append(int(budget))
            continue
        above = [p for p in sizes if p > budget]
        moved = min(above) if above else max(p for p in sizes if p < budget)
        notes.append(f"the window of budget {format_count(budget)} holds no tree; using {format_count(moved)}, "
                     "the nearest tree size")
        out.append(int(moved))
    return sorted(set(out)), notes


def exhaustive_space(affinity: AffinityData, params_budget: float | None = None,
                     costs: dict[str, Any] | None = None, branch_stages: int | None = None) -> TreeSpace:
    """Every tree (ends included) in the budget window of ``params_budget``, or every tree
    when it is None, optionally only those that branch in the last ``branch_stages`` stages."""
    c = _costs(affinity, costs)
    window = budget_window(params_budget) if params_budget is not None else None
    return TreeSpace(affinity.tasks, c["stage_params"], c["head_params"], window, branch_stages)


def count_trees(affinity: AffinityData, params_budget: float | None = None, costs: dict[str, Any] | None = None,
                branch_stages: int | None = None) -> int:
    """How many trees :func:`all_trees` would list (before it builds any)."""
    return exhaustive_space(affinity, params_budget, costs, branch_stages).size


def price(space: TreeSpace, partitions: Sequence[Partitions], affinity: AffinityData,
          costs: dict[str, Any] | None = None, method: str = "random", budget: float | None = None,
          cost: Any = "max") -> list[Tree]:
    """Each chain as a :class:`Tree` with params, FLOPs and dissimilarity (under ``cost``)
    from :func:`branchnet.tree.make_tree`; ``method`` and the params budget are recorded."""
    from branchnet.tree import make_tree

    c = _costs(affinity, costs)
    return [make_tree(p, affinity.tasks, affinity.locations, affinity.affinity, budget={"params": budget,
                      "flops": None}, backbone=affinity.backbone, method=method, cost=cost, **c)
            for p in partitions]


@dataclass
class Population:
    """Trees of a population with how many the space held.

    ``trees`` in rank order (by params); ``total`` the size of the space; ``took_all`` when
    every tree of the space is in ``trees`` (a random sample asked for at least as many).
    """

    trees: list[Tree]
    total: int
    took_all: bool
    window: tuple[float, float] | None = None


def random_trees(affinity: AffinityData, params_budget: float, count: int, seed: int = 0,
                 costs: dict[str, Any] | None = None, branch_stages: int | None = None,
                 cost: Any = "max") -> Population:
    """``count`` distinct random trees of budget ``params_budget``, uniform over the window's
    trees (docs/design.md, "Evaluation"), priced; all of them when the window holds fewer.

    Deterministic per ``seed``. Raises :class:`BadInput` for ``count <= 0`` or a window
    without trees. ``costs`` are explicit stage/head costs overriding the affinity file's;
    ``cost`` the group cost of the dissimilarity (:mod:`branchnet.tree.group_cost`).
    """
    if count <= 0:
        raise BadInput(f"--random {count}: ask for at least one random tree")
    space = random_space(affinity, params_budget, costs, branch_stages)
    chosen = space.sample(count, seed)
    return Population(price(space, chosen, affinity, costs, "random", params_budget, cost), space.size,
                      space.size <= count, space.window)


def all_trees(affinity: AffinityData, params_budget: float | None = None, costs: dict[str, Any] | None = None,
              branch_stages: int | None = None, limit: int = EXHAUSTIVE_LIMIT, cost: Any = "max") -> Population:
    """Every tree (in the window of ``params_budget`` when given), priced, in params order.

    Refuses with :class:`BadInput` (naming the count, suggesting ``--branch-stages`` or
    ``--random``) when there are more than ``limit``, and when a window holds none.
    """
    space = exhaustive_space(affinity, params_budget, costs, branch_stages)
    if space.size > limit:
        raise BadInput(f"there are {space.size:,} trees{_where(space)}, more than the {limit:,} an exhaustive "
                       f"listing takes; restrict them with --branch-stages L (branch in the last L stages only), "
                       f"a --params window, or draw some with --random K")
    if space.size == 0:
        raise BadInput(f"no tree{_where(space)}; choose a budget whose window [0.9 B, B] holds trees")
    return Population(price(space, space.all(), affinity, costs, "exhaustive", params_budget, cost), space.size,
                      True, space.window)


def _where(space: TreeSpace) -> str:
    parts = []
    if space.window is not None:
        parts.append(f"with params in [{format_count(space.window[0])}, {format_count(space.window[1])}]")
    if space.branch_stages is not None:
        parts.append(f"branching in the last {space.branch_stages} stages")
    return (" " + " and ".join(parts)) if parts else ""

"""Which tree to train next, and which tree to recommend, under a learned sharing cost.

The trees of budget B are those of the window ``[0.9 B, B]`` (docs/design.md, "Evaluation").
Three ways to propose the next tree of a budget (compared in docs/evaluate.md and
``tools/bench_search.py``):

``thompson`` (the default; Thompson, 1933; Russo et al., "A Tutorial on Thompson Sampling", 2018)
    draw the coefficients from the posterior and search the window's best tree under that
    draw with the exact tree search (:func:`branchnet.tree.search.search_tree` with the draw's
    ``learned`` group cost and ``min_params = 0.9 B``): a tree is proposed as often as the
    posterior believes it is the best, at any number of tasks the exact search handles.
``ei`` (expected improvement; Jones et al., "Efficient Global Optimization", 1998)
    over the window's trees (all of them when there are at most :data:`EI_CANDIDATES`, else a
    uniform sample of that many plus the posterior mean's best tree), the tree of largest
    ``E[max(0, Δ(T) - f*)]`` under the posterior of its expected Δ_MTL, with ``f*`` the best
    posterior mean among the window's trained trees (or among the candidates before any).
``random``
    a uniform tree of the window: the baseline the loop must beat.

A proposal names a training seed too: the loop's seeds in turn, and for a tree already trained
at that seed the next seed where it is not; a tree trained at every seed is not proposed again
(Thompson sampling draws again, up to :data:`REDRAWS` times, then takes the best untried tree
of the posterior mean).

The recommended tree of budget B (:func:`recommend`) is the window's tree of best posterior
mean: the exact search under the posterior mean's group cost.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from branchnet.affinity import AffinityData
from branchnet.errors import BadInput, unknown_choice
from branchnet.tree.group_cost import GroupCost
from branchnet.tree.record import Partitions
from branchnet.tree.sampling import WINDOW_FRACTION, TreeSpace
from branchnet.tree.search.problem import partitions_to_labels

#: The acquisition functions (see the module docstring).
ACQUISITIONS = ("thompson", "ei", "random")
#: Most window trees expected improvement scores (else a uniform sample of this many).
EI_CANDIDATES = 4096
#: Thompson draws before falling back to the best untried tree of the posterior mean.
REDRAWS = 20


@dataclass
class SearchSpace:
    """The trees a search may train: N tasks over D stages with their params (and FLOPs).

    ``stage_params`` (D,) params of one copy of each stage; ``head_params`` (N,) of each head.
    """

    tasks: list[str]
    locations: list[str]
    stage_params: np.ndarray
    head_params: np.ndarray
    stage_flops: np.ndarray | None = None
    head_flops: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.tasks, self.locations = list(self.tasks), list(self.locations)
        self.stage_params = np.asarray(self.stage_params, dtype=np.float64)
        self.head_params = np.asarray(self.head_params, dtype=np.float64)
        n, d = len(self.tasks), len(self.locations)
        self._stub = AffinityData(affinity=np.broadcast_to(np.eye(n), (d, n, n)).copy(), tasks=self.tasks,
                                  locations=self.locations, stage_params=self.stage_params,
                                  head_params=self.head_params)

    @property
    def low(self) -> float:
        """Params of the all-shared tree."""
        return float(self.stage_params.sum() + self.head_params.sum())

    @property
    def high(self) -> float:
        """Params of the all-separate tree."""
        return float(len(self.tasks) * self.stage_params.sum() + self.head_params.sum())

    def params(self, partitions: Partitions) -> int:
        counts = np.array([len(p) for p in partitions], dtype=np.float64)
        return int(round(float(counts @ self.stage_params + self.head_params.sum())))

    def window(self, budget: float) -> tuple[float, float]:
        return WINDOW_FRACTION * float(budget), float(budget)

    def best_tree(self, cost: GroupCost, budget: float) -> Partitions:
        """The window's tree of least dissimilarity under ``cost`` (exact search)."""
        from branchnet.tree.search import search_tree

        low, high = self.window(budget)
        return search_tree(self._stub, high, cost=cost, min_params=low).partitions

    def window_trees(self, budget: float) -> TreeSpace:
        """Every tree of the window (ends included), numbered (:class:`~branchnet.tree.sampling.TreeSpace`)."""
        space = TreeSpace(self.tasks, self.stage_params, self.head_params, self.window(budget))
        if space.size == 0:
            low, high = self.window(budget)
            raise BadInput(f"the window [{low:.0f}, {high:.0f}] params of budget {budget:.0f} holds no tree; "
                           "choose another budget")
        return space


@dataclass(frozen=True)
class Proposal:
    """One network the loop asks for: ``partitions`` trained with ``seed``, proposed for
    ``budget`` by ``acquisition`` as the ``index``-th proposal; ``score`` the acquisition's
    value (the draw's predicted Δ_MTL for Thompson, the expected improvement for EI)."""

    index: int
    budget: int
    tree_id: str
    partitions: Partitions
    seed: int
    acquisition: str
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "budget": self.budget, "tree_id": self.tree_id,
                "partitions": [[list(g) for g in p] for p in self.partitions], "seed": self.seed,
                "acquisition": self.acquisition, "score": self.score}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Proposal":
        return cls(int(obj["index"]), int(obj["budget"]), str(obj["tree_id"]),
                   [[list(map(str, g)) for g in p] for p in obj["partitions"]], int(obj["seed"]),
                   str(obj["acquisition"]), None if obj.get("score") is None else float(obj["score"]))


def _tree_id(partitions: Partitions, tasks: Sequence[str]) -> str:
    from branchnet.study.jobs import tree_id

    return tree_id(partitions, tasks)


def pick_seed(tree: str, seeds: Sequence[int], preferred: int, taken: Collection[tuple[str, int]]) -> int | None:
    """``preferred`` if ``tree`` is not trained (or proposed) with it, else the next seed of
    ``seeds`` where it is not; None when it is at every seed."""
    order = list(seeds)
    start = order.index(preferred) if preferred in order else 0
    for seed in order[start:] + order[:start]:
        if (tree, seed) not in taken:
            return seed
    return None


def recommend(model: Any, space: SearchSpace, budget: float) -> Partitions:
    """The window's tree of best posterior mean (the recommended tree of the budget)."""
    return space.best_tree(model.cost(), budget)


def propose(model: Any, space: SearchSpace, budget: int, seeds: Sequence[int], index: int,
            taken: Collection[tuple[str, int]], rng: np.random.Generator, acquisition: str = "thompson") -> Proposal:
    """The ``index``-th proposal, for ``budget``: a tree of its window and a seed it is not yet
    trained with (``taken``: every (tree id, seed) trained or proposed). :class:`BadInput` when
    every tree of the window is trained at every seed."""
    if acquisition not in ACQUISITIONS:
        raise unknown_choice("acquisition", acquisition, ACQUISITIONS)
    preferred = seeds[index % len(seeds)]
    tasks = space.tasks
    if acquisition == "thompson":
        for _ in range(REDRAWS):
            theta = model.sample(rng, 1)[0]
            tree = space.best_tree(model.cost(theta), budget)
            tid = _tree_id(tree, tasks)
            seed = pick_seed(tid, seeds, preferred, taken)
            if seed is not None:
                score = float(model.design.intercept(theta)) - _dissimilarity(model, tree, theta)
                return Proposal(index, int(budget), tid, tree, seed, acquisition, score)
        return _best_untried(model, space, budget, seeds, preferred, index, taken, rng, acquisition)
    if acquisition == "ei":
        return _expected_improvement(model, space, budget, seeds, preferred, index, taken, rng)
    window = space.window_trees(budget)
    for _ in range(8 * REDRAWS):
        tree = window.partitions(int(rng.integers(window.size)))
        tid = _tree_id(tree, tasks)
        seed = pick_seed(tid, seeds, preferred, taken)
        if seed is not None:
            return Proposal(index, int(budget), tid, tree, seed, acquisition, None)
    return _best_untried(model, space, budget, seeds, preferred, index, taken, rng, acquisition)


def _dissimilarity(model: Any, tree: Partitions, theta: np.ndarray) -> float:
    from branchnet.tree.costs import tree_dissimilarity

    d, n = len(model.locations), len(model.tasks)
    return tree_dissimilarity(tree, model.tasks, np.zeros((d, n, n)), model.cost(theta))


def _candidates(space: SearchSpace, budget: float, rng: np.random.Generator) -> list[Partitions]:
    window = space.window_trees(budget)
    if window.size <= EI_CANDIDATES:
        return window.all()
    ranks = sorted({int(r) for r in rng.integers(0, window.size, size=EI_CANDIDATES)})
    return [window.partitions(r) for r in ranks]


def _untried(trees: Sequence[Partitions], tasks: Sequence[str], seeds: Sequence[int], preferred: int,
             taken: Collection[tuple[str, int]]) -> list[tuple[Partitions, str, int]]:
    out = []
    for tree in trees:
        tid = _tree_id(tree, tasks)
        seed = pick_seed(tid, seeds, preferred, taken)
        if seed is not None:
            out.append((tree, tid, seed))
    return out


def _best_untried(model: Any, space: SearchSpace, budget: int, seeds: Sequence[int], preferred: int, index: int,
                  taken: Collection[tuple[str, int]], rng: np.random.Generator, acquisition: str) -> Proposal:
    open_ = _untried(_candidates(space, budget, rng), space.tasks, seeds, preferred, taken)
    if not open_:
        raise BadInput(f"every tree of the window of budget {budget} is trained at every search seed; "
                       "ask for fewer networks or more seeds")
    mean, _ = model.predict_delta([t for t, _, _ in open_])
    tree, tid, seed = open_[int(np.argmax(mean))]
    return Proposal(index, int(budget), tid, tree, seed, acquisition, float(np.max(mean)))


def _expected_improvement(model: Any, space: SearchSpace, budget: int, seeds: Sequence[int], preferred: int,
                          index: int, taken: Collection[tuple[str, int]], rng: np.random.Generator) -> Proposal:
    trees = _candidates(space, budget, rng) + [recommend(model, space, budget)]
    open_ = _untried(trees, space.tasks, seeds, preferred, taken)
    if not open_:
        raise BadInput(f"every tree of the window of budget {budget} is trained at every search seed; "
                       "ask for fewer networks or more seeds")
    mean, sd = model.predict_delta([t for t, _, _ in open_])
    low, high = space.window(budget)
    trained = [o.partitions for o in model.observations if low * (1 - 1e-9) <= space.params(o.partitions)
               <= high * (1 + 1e-9)]
    best = float(np.max(model.predict_delta(trained)[0])) if trained else float(np.max(mean))
    z = (mean - best) / np.maximum(sd, 1e-12)
    gain = (mean - best) * stats.norm.cdf(z) + sd * stats.norm.pdf(z)
    k = int(np.argmax(gain))
    tree, tid, seed = open_[k]
    return Proposal(index, int(budget), tid, tree, seed, "ei", float(gain[k]))


def labels_of(trees: Sequence[Partitions], tasks: Sequence[str]) -> np.ndarray:
    """(K, D, N) label arrays of trees given as partitions."""
    return np.stack([partitions_to_labels(t, list(tasks)) for t in trees])

"""How a tree's dissimilarity adds up its groups: the paper's cost and three alternatives.

Every cost has the form (docs/design.md, "Tree"; docs/tree.md, "Cost functions")::

    dissimilarity(tree) = sum_d  (1 / Z_d)  sum_{g in P_d}  c_d(g)

with ``D = 1 - A`` the task dissimilarities, ``c_d(g)`` a group's cost at stage d (0 for a
one-task group) and ``Z_d`` a normaliser:

``max`` (the default; Vandenhende et al., "Branched Multi-Task Networks", Section 3.2)
    ``c_d(g) = max_{i<j in g} D[d, i, j]`` (the worst pair), ``Z_d = k_d = |P_d|``: the mean
    over groups of the worst pair, the paper's ``C_cluster``.
``mean``
    ``c_d(g) = mean_{i<j in g} D[d, i, j]`` (the mean pair), ``Z_d = k_d``: a group pays for
    its typical pair rather than its worst one.
``weighted``
    ``c_d(g) = |g| max_{i<j in g} D[d, i, j]``, ``Z_d = N``: the size-weighted mean over groups
    of the worst pair, so a large group that mixes dissimilar tasks costs more than a small one.
``learned`` (beyond the paper; :mod:`branchnet.learned`)
    ``c_d(g) = sum_{i<j in g} C[d, i, j]`` over a pair-cost tensor ``C`` (D, N, N) that a fitted
    model of what sharing costs each task supplies (``C[d, i, j] = -(W[i, d, j] + W[j, d, i])``,
    ``W[t, d, j]`` the predicted change of task t's score from sharing stage d with task j,
    docs/design.md "Learned sharing cost"), ``Z_d = N``: the dissimilarity is then minus the
    predicted Δ_MTL up to a constant, ``-sum_d sum_{g in P_d} h_d(g)``. Its pair costs may be
    negative (sharing that helps) and it reads no affinity: :meth:`GroupCost.distances` returns
    ``C`` whatever distances it is given.
``sensitivity`` (beyond the paper)
    the ``max`` cost over reweighted dissimilarities ``w_ij D[d, i, j]``, ``w_ij = (w_i + w_j) / 2``,
    ``w_t = 1 + l_t / max_u l_u`` with ``l_t = max(0, -Δ_t)`` the percentage points task t loses
    in the all-shared network (its per-task Δ, ``delta_mtl.test.per_task`` of that network's
    metrics.json); every ``w_t = 1`` (the ``max`` cost) when no task loses. A task that suffers
    from sharing has its pairs weighed up to twice as much, so it splits off first.

The tree searches only need, per stage, the cost of every task subset and the normaliser
(the subset dynamic program of :mod:`branchnet.tree.search.exact`), so every cost here is
searched exactly; ``sensitivity`` is the ``max`` form over other distances, so the scalable
search (built on group diameters) handles it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from branchnet.errors import BadInput, unknown_choice

#: Names of the cost functions, the paper's first.
COSTS = ("max", "mean", "weighted", "sensitivity", "learned")
#: The group-term forms over a distance matrix: what a search has to evaluate
#: (``pairsum``: the sum of the group's pair costs, normalised by N; the learned cost's).
FORMS = ("max", "mean", "weighted", "pairsum")


@dataclass(frozen=True)
class GroupCost:
    """One cost function (see the module docstring).

    Attributes:
        name: one of :data:`COSTS`.
        task_weights: (N,) ``w_t`` of the ``sensitivity`` cost, in the order of the tasks;
            None for the other costs.
    """

    name: str = "max"
    task_weights: tuple[float, ...] | None = None
    pair_costs: tuple[float, ...] | None = None
    pair_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.name not in COSTS:
            raise unknown_choice("cost", self.name, COSTS)
        if (self.name == "sensitivity") != (self.task_weights is not None):
            raise BadInput("the sensitivity cost needs one weight per task (and only it has them); "
                           "build it with sensitivity_cost(per_task_delta, tasks)")
        if (self.name == "learned") != (self.pair_costs is not None and self.pair_shape is not None):
            raise BadInput("the learned cost needs a (D, N, N) pair-cost tensor from a fitted model (and only it "
                           "has one); build it with learned_cost(pair_costs) or `--cost learned --model M`")

    @property
    def form(self) -> str:
        """The group term over :meth:`distances`: ``"max"``, ``"mean"``, ``"weighted"`` or ``"pairsum"``."""
        if self.name == "sensitivity":
            return "max"
        return "pairsum" if self.name == "learned" else self.name

    def pair_tensor(self) -> np.ndarray | None:
        """The learned cost's (D, N, N) pair costs, None for every other cost."""
        if self.pair_costs is None or self.pair_shape is None:
            return None
        return np.asarray(self.pair_costs, dtype=np.float64).reshape(self.pair_shape)

    def distances(self, dist: np.ndarray) -> np.ndarray:
        """The distances the group term reads: ``dist`` (..., N, N) itself, reweighted by
        ``w_ij = (w_i + w_j) / 2`` for ``sensitivity``, or the learned cost's own pair costs
        (which must have ``dist``'s shape)."""
        pairs = self.pair_tensor()
        if pairs is not None:
            if pairs.shape[-2:] != np.shape(dist)[-2:] or (np.ndim(dist) == 3 and pairs.shape != np.shape(dist)):
                raise BadInput(f"the learned cost is for {pairs.shape[1]} tasks and {pairs.shape[0]} stages but "
                               f"the trees have shape {tuple(np.shape(dist))}; use a model fitted on these tasks")
            return pairs if np.ndim(dist) == 3 else pairs[0]
        if self.task_weights is None:
            return dist
        w = np.asarray(self.task_weights, dtype=np.float64)
        if w.shape[0] != dist.shape[-1]:
            raise BadInput(f"the sensitivity cost has {w.shape[0]} task weights but there are "
                           f"{dist.shape[-1]} tasks")
        return np.asarray(dist, dtype=np.float64) * ((w[:, None] + w[None, :]) / 2)

    def to_json(self) -> dict[str, Any]:
        """``{"name": ..., "task_weights": [...]|None}`` (a tree.json's ``cost`` entry)."""
        out: dict[str, Any] = {"name": self.name, "task_weights": None if self.task_weights is None
                               else [float(w) for w in self.task_weights]}
        pairs = self.pair_tensor()
        if pairs is not None:
            out["pair_costs"] = pairs.tolist()
        return out


MAX = GroupCost("max")


def group_term(dist: np.ndarray, members: np.ndarray, form: str) -> float:
    """``c(g)`` of the group ``members`` (task indices) under ``form`` over ``dist`` (N, N)."""
    size = len(members)
    if size < 2:
        return 0.0
    block = dist[np.ix_(members, members)]
    if form == "max":
        return float(block.max())
    if form == "mean":
        return float(block[np.triu_indices(size, k=1)].mean())
    if form == "weighted":
        return float(size * block.max())
    if form == "pairsum":
        return float(block[np.triu_indices(size, k=1)].sum())
    raise unknown_choice("cost form", form, FORMS)


def divisor(counts: Any, n: int, form: str) -> Any:
    """The normaliser ``Z_d`` for group counts ``counts`` (any shape): ``counts`` itself for
    ``max`` and ``mean`` (a mean over groups), ``n`` for ``weighted`` (a mean over tasks) and
    ``pairsum`` (the learned cost: a sum over tasks' terms divided by N, as Δ_MTL is a mean)."""
    if form in ("weighted", "pairsum"):
        return np.full(np.shape(counts), float(n)) if np.ndim(counts) else float(n)
    return counts


def resolve_cost(cost: str | GroupCost | None, tasks: Sequence[str] | None = None) -> GroupCost:
    """A :class:`GroupCost` from a name or an instance (None: the paper's ``max``).

    ``"sensitivity"`` by name has no weights: it raises :class:`BadInput` pointing to
    :func:`sensitivity_cost`. An instance with weights must have one per task of ``tasks``.
    """
    if cost is None:
        return MAX
    if isinstance(cost, GroupCost):
        if cost.task_weights is not None and tasks is not None and len(cost.task_weights) != len(tasks):
            raise BadInput(f"the sensitivity cost has {len(cost.task_weights)} task weights but there are "
                           f"{len(tasks)} tasks")
        return cost
    if not isinstance(cost, str) or cost not in COSTS:
        raise unknown_choice("cost", str(cost), COSTS)
    if cost == "learned":
        raise BadInput("the learned cost comes from a fitted model of what sharing costs each task: give its "
                       "model.json (--model R/search/model.json, made by `branchnet search`)")
    if cost == "sensitivity":
        raise BadInput("the sensitivity cost weighs tasks by how much each loses in the all-shared network: "
                       "give that network's metrics.json (--shared-metrics, from `branchnet run` or "
                       "`branchnet train --tree shared`)")
    return GroupCost(cost)


def learned_cost(pair_costs: Any) -> GroupCost:
    """The ``learned`` :class:`GroupCost` of a (D, N, N) pair-cost tensor (symmetric in its last
    two axes; the diagonal is ignored). :class:`BadInput` for another shape or a non-finite entry."""
    pairs = np.asarray(pair_costs, dtype=np.float64)
    if pairs.ndim != 3 or pairs.shape[1] != pairs.shape[2] or pairs.shape[1] < 1:
        raise BadInput(f"learned pair costs must have shape (stages, tasks, tasks), not {pairs.shape}")
    if not np.all(np.isfinite(pairs)):
        raise BadInput("learned pair costs hold NaN or Inf; refit the model")
    pairs = (pairs + pairs.transpose(0, 2, 1)) / 2
    idx = np.arange(pairs.shape[1])
    pairs[:, idx, idx] = 0.0
    return GroupCost("learned", pair_costs=tuple(float(x) for x in pairs.reshape(-1)),
                     pair_shape=tuple(int(x) for x in pairs.shape))  # type: ignore[arg-type]


def sensitivity_weights(per_task_delta: Mapping[str, float], tasks: Sequence[str]) -> np.ndarray:
    """(N,) ``w_t = 1 + l_t / max_u l_u``, ``l_t = max(0, -Δ_t)`` (all ones when no task loses).

    ``per_task_delta`` maps each task to its Δ in percent in the all-shared network
    (positive = better than its single-task model), e.g. ``delta_mtl.test.per_task``.
    """
    missing = [t for t in tasks if t not in per_task_delta]
    if missing:
        raise BadInput(f"the all-shared network's per-task Δ lacks task(s) {', '.join(missing)}; "
                       "use the metrics.json of an all-shared network trained on these tasks")
    delta = np.array([float(per_task_delta[t]) for t in tasks], dtype=np.float64)
    if not np.all(np.isfinite(delta)):
        raise BadInput("the all-shared network's per-task Δ holds NaN or Inf; retrain it")
    loss = np.maximum(0.0, -delta)
    top = float(loss.max()) if len(loss) else 0.0
    return np.ones(len(tasks)) if top <= 0 else 1.0 + loss / top


def sensitivity_cost(per_task_delta: Mapping[str, float], tasks: Sequence[str]) -> GroupCost:
    """The ``sensitivity`` :class:`GroupCost` from the all-shared network's per-task Δ (percent)."""
    return GroupCost("sensitivity", tuple(float(w) for w in sensitivity_weights(per_task_delta, tasks)))


def shared_per_task_delta(metrics: Mapping[str, Any], source: str = "metrics") -> dict[str, float]:
    """``delta_mtl.test.per_task`` of an all-shared network's metrics.json (task -> Δ in percent)."""
    try:
        per_task = metrics["delta_mtl"]["test"]["per_task"]
    except (KeyError, TypeError):
        raise BadInput(f"{source} has no delta_mtl.test.per_task; give the metrics.json of a branched "
                       "network trained by `branchnet train` or `branchnet run`") from None
    partitions = metrics.get("partitions") if isinstance(metrics, Mapping) else None
    if partitions is not None and any(len(p) != 1 for p in partitions):
        raise BadInput(f"{source} is not an all-shared network (its groups per stage are "
                       f"{'-'.join(str(len(p)) for p in partitions)}); give the metrics.json of the all-shared one")
    if not isinstance(per_task, Mapping):
        raise BadInput(f"{source}: delta_mtl.test.per_task must map each task to its Δ")
    return {str(k): float(v) for k, v in per_task.items()}

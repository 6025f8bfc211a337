"""What a tree costs and how dissimilar its groups are (docs/design.md, "Tree").

With ``k_d = |P_d|`` the number of groups at stage d::

    params(tree)        = sum_d k_d * stage_params[d] + sum_t head_params[t]
    flops(tree)         = sum_d k_d * stage_flops[d]  + sum_t head_flops[t]
    dissimilarity(tree) = sum_d mean_{g in P_d} max_{i<j in g} (1 - A[d, i, j])

(a singleton group counts 0): the clustering cost ``C_cluster`` of Vandenhende et al.,
"Branched Multi-Task Networks", Section 3.2. :func:`make_tree` prices a chain of
partitions from these definitions. ``cost=`` picks another way to add up the groups
(``"mean"``, ``"weighted"``, or the ``sensitivity`` :class:`~branchnet.tree.group_cost.GroupCost`;
defined in :mod:`branchnet.tree.group_cost`); the default ``"max"`` is the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from branchnet.errors import BadInput
from branchnet.tree.group_cost import GroupCost, divisor, group_term, resolve_cost
from branchnet.tree.record import Partitions, Tree, check_partitions, plain_number, separate_partitions, shared_partitions


def _counts(partitions: Partitions) -> np.ndarray:
    return np.array([len(p) for p in partitions], dtype=np.float64)


def _cost(partitions: Partitions, tasks: Sequence[str], stage: Any, head: Any, what: str) -> float | int:
    stage = np.asarray(stage, dtype=np.float64).reshape(-1)
    head = np.asarray(head, dtype=np.float64).reshape(-1)
    if stage.shape[0] != len(partitions):
        raise BadInput(f"stage_{what} has {stage.shape[0]} entries but the tree has {len(partitions)} stages")
    if head.shape[0] != len(tasks):
        raise BadInput(f"head_{what} has {head.shape[0]} entries but the tree has {len(tasks)} tasks")
    return plain_number(float(_counts(partitions) @ stage + head.sum()))  # type: ignore[return-value]


def tree_params(partitions: Partitions, tasks: Sequence[str], stage_params: Any, head_params: Any) -> float | int:
    """``sum_d |P_d| * stage_params[d] + sum_t head_params[t]`` (parameters).

    ``stage_params`` is (D,), ``head_params`` is (N,) in the order of ``tasks``.
    """
    return _cost(partitions, tasks, stage_params, head_params, "params")


def tree_flops(partitions: Partitions, tasks: Sequence[str], stage_flops: Any, head_flops: Any) -> float | int:
    """``sum_d |P_d| * stage_flops[d] + sum_t head_flops[t]`` (FLOPs per image)."""
    return _cost(partitions, tasks, stage_flops, head_flops, "flops")


def tree_dissimilarity(partitions: Partitions, tasks: Sequence[str], affinity: Any,
                       cost: str | GroupCost | None = "max") -> float:
    """``sum_d mean_{g in P_d} max_{i<j in g} (1 - A[d, i, j])``; singletons count 0.

    ``affinity`` is the (D, N, N) task-affinity tensor with tasks in the order of ``tasks``.
    ``cost`` adds the groups up another way (:mod:`branchnet.tree.group_cost`):
    ``sum_d (1 / Z_d) sum_{g in P_d} c_d(g)``.
    """
    a = np.asarray(affinity, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != len(partitions) or a.shape[1:] != (len(tasks), len(tasks)):
        raise BadInput(f"affinity of shape {a.shape} does not fit a tree of {len(partitions)} stages "
                       f"and {len(tasks)} tasks")
    index = {t: i for i, t in enumerate(tasks)}
    group_cost = resolve_cost(cost, tasks)
    if group_cost.name != "max":
        dist = group_cost.distances(1.0 - a)
        total = 0.0
        for d, partition in enumerate(partitions):
            level = sum(group_term(dist[d], np.array([index[t] for t in group]), group_cost.form)
                        for group in partition)
            total += level / divisor(len(partition), len(tasks), group_cost.form)
        return total
    total = 0.0
    for d, partition in enumerate(partitions):
        level = 0.0
        for group in partition:
            if len(group) > 1:
                idx = [index[t] for t in group]
                level += float(np.max(1.0 - a[d][np.ix_(idx, idx)]))
        total += level / len(partition)
    return total


def make_tree(partitions: Partitions, tasks: Sequence[str], locations: Sequence[str], affinity: Any,
              stage_params: Any, head_params: Any, stage_flops: Any = None, head_flops: Any = None,
              budget: dict[str, Any] | None = None, cost: str | GroupCost | None = "max", **fields: Any) -> Tree:
    """A :class:`Tree` with its params, FLOPs and dissimilarity computed from the definitions.

    The dissimilarity is under ``cost`` (:mod:`branchnet.tree.group_cost`); a cost other
    than the paper's ``max`` is recorded in the tree's ``extra["cost"]``
    (:meth:`GroupCost.to_json`), so its tree.json says how it was scored.
    """
    partitions = check_partitions([[list(g) for g in p] for p in partitions], tasks)
    group_cost = resolve_cost(cost, tasks)
    if group_cost.name != "max":
        fields.setdefault("extra", {})
        fields["extra"] = {**fields["extra"], "cost": group_cost.to_json()}
    flops = None
    if stage_flops is not None and head_flops is not None:
        flops = tree_flops(partitions, tasks, stage_flops, head_flops)

    def listed(value: Any) -> list[float] | None:
        return None if value is None else [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]

    fields.setdefault("costs", {"stage_params": listed(stage_params), "head_params": listed(head_params),
                                "stage_flops": listed(stage_flops) if flops is not None else None,
                                "head_flops": listed(head_flops) if flops is not None else None})
    return Tree(tasks=list(tasks), locations=list(locations), partitions=partitions,
                params=tree_params(partitions, tasks, stage_params, head_params), flops=flops,
                dissimilarity=tree_dissimilarity(partitions, tasks, affinity, group_cost),
                budget=dict(budget or {"params": None, "flops": None}), **fields)


def shared_tree(tasks: Sequence[str], locations: Sequence[str], affinity: Any = None, stage_params: Any = None,
                head_params: Any = None, stage_flops: Any = None, head_flops: Any = None,
                cost: str | GroupCost | None = "max") -> Tree:
    """The all-shared tree: every task shares every stage.

    Costs and dissimilarity (under ``cost``) are filled in when ``affinity`` and the cost
    arrays are given; otherwise params is 0, flops None and dissimilarity NaN.
    """
    return _end_tree(shared_partitions(tasks, len(locations)), tasks, locations, affinity,
                     stage_params, head_params, stage_flops, head_flops, cost)


def separate_tree(tasks: Sequence[str], locations: Sequence[str], affinity: Any = None, stage_params: Any = None,
                  head_params: Any = None, stage_flops: Any = None, head_flops: Any = None,
                  cost: str | GroupCost | None = "max") -> Tree:
    """The all-separate tree: one branch per task from the root (dissimilarity 0)."""
    return _end_tree(separate_partitions(tasks, len(locations)), tasks, locations, affinity,
                     stage_params, head_params, stage_flops, head_flops, cost)


def _end_tree(partitions: Partitions, tasks: Sequence[str], locations: Sequence[str], affinity: Any,
              stage_params: Any, head_params: Any, stage_flops: Any, head_flops: Any,
              cost: str | GroupCost | None = "max") -> Tree:
    tasks, locations = list(tasks), list(locations)
    params: float | int = 0
    if stage_params is not None and head_params is not None:
        params = tree_params(partitions, tasks, stage_params, head_params)
    flops = None
    if stage_flops is not None and head_flops is not None:
        flops = tree_flops(partitions, tasks, stage_flops, head_flops)
    diss = tree_dissimilarity(partitions, tasks, affinity, cost) if affinity is not None else float("nan")
    return Tree(tasks=tasks, locations=locations, partitions=partitions, params=params, flops=flops,
                dissimilarity=diss)

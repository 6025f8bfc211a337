"""A branched tree from ``branchnet build`` as one more candidate network.

So that a user sees both approaches at the same budget: the tree (one network sharing
layers as its partitions say) competes with the task groupings in the selection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from branchnet.errors import BadInput
from branchnet.selection.candidates import Candidate, CandidateTable
from branchnet.units import format_count


def _tree_tasks(tree: Mapping) -> list[str]:
    tasks = tree.get("tasks") if isinstance(tree, Mapping) else None
    if not isinstance(tasks, (list, tuple)) or not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise BadInput("the tree has no 'tasks' list of task names; expected a tree.json object")
    if len(set(tasks)) != len(tasks):
        raise BadInput(f"the tree's tasks repeat a name ({', '.join(tasks)}); task names must be unique")
    for d, partition in enumerate(tree.get("partitions") or []):
        members = [t for group in partition for t in group]
        if sorted(members) != sorted(tasks):
            raise BadInput(f"the tree's partition {d} does not hold every task exactly once "
                           f"({members} vs {list(tasks)})")
    return list(tasks)


def tree_candidate(tree: Mapping, losses: Mapping[str, float], cost: float | None = None, *,
                   reference_flops: float | None = None, name: str | None = None) -> Candidate:
    """The candidate for a branched tree with measured per-task losses.

    Args:
        tree: a tree.json-like dict (``tasks``, ``partitions``, ``params``, ``flops``).
        losses: ``{task: loss}`` for every task of the tree (validation losses, as for
            the other candidates).
        cost: the tree's relative cost; if None, ``tree["flops"] / reference_flops``
            (FLOPs relative to the full-width single-task network, like the groupings).
        reference_flops: the full-width single-task network's FLOPs per image.
        name: the candidate's name (default ``branched-<params>``, e.g. ``branched-11.2M``).
    """
    tasks = _tree_tasks(tree)
    missing = [t for t in tasks if t not in losses]
    if missing:
        raise BadInput(f"no loss for task(s) {', '.join(missing)} of the tree; give a loss for every task it solves")
    extra = [t for t in losses if t not in tasks]
    if extra:
        raise BadInput(f"loss given for {', '.join(extra)}, which the tree does not solve (tasks: {', '.join(tasks)})")
    if cost is None:
        flops = tree.get("flops")
        if flops is None or reference_flops is None:
            raise BadInput("the tree's cost is unknown: give cost, or a tree with 'flops' and the "
                           "reference single-task FLOPs (reference_flops)")
        if not reference_flops > 0:
            raise BadInput(f"reference_flops {reference_flops} must be positive")
        cost = float(flops) / float(reference_flops)
    cost = float(cost)
    if not math.isfinite(cost) or cost < 0:
        raise BadInput(f"the tree's cost {cost} must be a finite number >= 0")
    for task in tasks:
        value = float(losses[task])
        if not math.isfinite(value) or value < 0:
            raise BadInput(f"the tree's loss on '{task}' is {value}; it must be a finite number >= 0")
    if name is None:
        params = tree.get("params")
        name = f"branched-{format_count(params)}" if params is not None else "branched"
    return Candidate(name, cost, {t: float(losses[t]) for t in tasks})


def add_tree_candidate(table: CandidateTable, tree: Mapping, losses: Mapping[str, float],
                       cost: float | None = None, *, reference_flops: float | None = None,
                       name: str | None = None) -> CandidateTable:
    """``table`` with the tree appended as a candidate row (see :func:`tree_candidate`).

    A tree task that is not a column yet becomes a new column. Raises BadInput when the
    name is taken (pass another ``name``).
    """
    cand = tree_candidate(tree, losses, cost, reference_flops=reference_flops, name=name)
    if cand.name in table.names:
        raise BadInput(f"a network called '{cand.name}' is already in the table; give the tree another name")
    return table.with_candidates([cand])

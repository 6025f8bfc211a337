"""Branched trees of task groups: the :class:`Tree` record, partitions, and ``tree.json``.

A tree is a list of partitions ``P_0 .. P_{D-1}`` of the task set (docs/design.md, "Tree"):
``P_d`` says which tasks share encoder stage d, and every ``P_d`` refines ``P_{d-1}``
(a group only ever splits going deeper). Its costs and dissimilarity are defined in
:mod:`branchnet.tree.costs`; the search for the tree of least dissimilarity under a
budget lives in :mod:`branchnet.tree.search`.

Partitions are kept in a canonical order: tasks inside a group in the order of
``tasks``, groups ordered by their first task.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branchnet.errors import BadInput
from branchnet.atomic import atomic_write_json

Partitions = list[list[list[str]]]


@dataclass
class Tree:
    """A branched multi-task network as a chain of nested task partitions.

    Attributes:
        tasks: N task names.
        locations: D branch-point (stage) names, shallow to deep.
        partitions: D partitions; ``partitions[d]`` is a list of groups (lists of task
            names) that share stage d, in canonical order.
        params: parameters of the whole network (stages and heads).
        flops: FLOPs per image of the whole network, or None when unknown.
        dissimilarity: the clustering cost above (sum over stages of the mean over
            groups of the largest ``1 - A[d, i, j]`` inside a group).
        budget: the budget the tree was built for, ``{"params": float|None, "flops": float|None}``.
        backbone: name of the backbone the costs belong to, when known.
        method: how the tree was found (``"exact"``, ``"scalable"``, ``"given"``...), or None.
        notes: remarks for the user (e.g. the budget exceeded the all-separate network).
        costs: the per-stage and per-head costs the tree was priced with, when known:
            ``{"stage_params": [D], "head_params": [N], "stage_flops": [D]|None,
            "head_flops": [N]|None}`` (exports give each node its own cost from them).
        extra: any other keys read from a tree.json, written back unchanged.
    """

    tasks: list[str]
    locations: list[str]
    partitions: Partitions
    params: float | int
    flops: float | int | None
    dissimilarity: float
    budget: dict[str, float | int | None] = field(default_factory=lambda: {"params": None, "flops": None})
    backbone: str | None = None
    method: str | None = None
    notes: list[str] = field(default_factory=list)
    costs: dict[str, list[float] | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def depth(self) -> int:
        return len(self.locations)

    @property
    def group_counts(self) -> list[int]:
        """``k_d = |P_d|`` for every stage d."""
        return [len(p) for p in self.partitions]

    def to_json(self) -> dict[str, Any]:
        """The ``tree.json`` object (docs/design.md, "File formats"), plus branchnet's extra keys."""
        out: dict[str, Any] = {
            "tasks": list(self.tasks),
            "locations": list(self.locations),
            "partitions": [[list(g) for g in p] for p in self.partitions],
            "params": plain_number(self.params),
            "flops": plain_number(self.flops),
            "dissimilarity": float(self.dissimilarity),
            "budget": {"params": plain_number(self.budget.get("params")),
                       "flops": plain_number(self.budget.get("flops"))},
        }
        if self.backbone is not None:
            out["backbone"] = self.backbone
        if self.method is not None:
            out["method"] = self.method
        if self.notes:
            out["notes"] = list(self.notes)
        if self.costs is not None:
            out["costs"] = {k: None if v is None else [plain_number(x) for x in v] for k, v in self.costs.items()}
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


def plain_number(value: Any) -> int | float | None:
    """``value`` as a JSON number: integral values become int."""
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value) and value == round(value) and abs(value) < 2**62:
        return int(round(value))
    return value


# ---------------------------------------------------------------------------------------
# Partitions


def canonical_partitions(partitions: Iterable[Iterable[Iterable[str]]], tasks: Sequence[str]) -> Partitions:
    """Groups with tasks in ``tasks`` order, groups ordered by their first task."""
    order = {t: i for i, t in enumerate(tasks)}
    out: Partitions = []
    for partition in partitions:
        groups = [sorted(group, key=order.__getitem__) for group in partition]
        out.append(sorted(groups, key=lambda g: order[g[0]]))
    return out


def check_partitions(partitions: Any, tasks: Sequence[str], source: str = "tree") -> Partitions:
    """Validate a chain of partitions and return it in canonical order.

    Every partition must be a list of non-empty groups that together hold every task
    exactly once, and every partition must refine the one before it. Raises
    :class:`BadInput` naming ``source``, the level and the fault.
    """
    tasks = list(tasks)
    task_set = set(tasks)
    if not isinstance(partitions, list) or not partitions:
        raise BadInput(f"{source}: 'partitions' must be a non-empty list of partitions (lists of groups)")
    previous: dict[str, int] | None = None
    for d, partition in enumerate(partitions):
        if not isinstance(partition, list) or not all(isinstance(g, list) for g in partition):
            raise BadInput(f"{source}: partitions[{d}] must be a list of groups (lists of task names)")
        seen: dict[str, int] = {}
        for j, group in enumerate(partition):
            if not group:
                raise BadInput(f"{source}: partitions[{d}] group {j} is empty; every group needs a task")
            for t in group:
                if not isinstance(t, str):
                    raise BadInput(f"{source}: partitions[{d}] holds {t!r}, which is not a task name")
                if t not in task_set:
                    raise BadInput(f"{source}: partitions[{d}] names task '{t}', which is not in 'tasks' "
                                   f"({', '.join(tasks)})")
                if t in seen:
                    raise BadInput(f"{source}: partitions[{d}] holds task '{t}' twice; "
                                   "each task belongs to exactly one group per stage")
                seen[t] = j
        missing = [t for t in tasks if t not in seen]
        if missing:
            raise BadInput(f"{source}: partitions[{d}] misses task(s) {', '.join(missing)}; "
                           "every stage must place every task in one group")
        if previous is not None:
            for group in partition:
                owners = {previous[t] for t in group}
                if len(owners) > 1:
                    raise BadInput(f"{source}: partitions[{d}] group {group} spans several groups of "
                                   f"partitions[{d - 1}]; partitions must nest (groups only split going deeper)")
        previous = seen
    return canonical_partitions(partitions, tasks)


def shared_partitions(tasks: Sequence[str], depth: int) -> Partitions:
    """All tasks share every stage (the usual multi-task baseline)."""
    return [[list(tasks)] for _ in range(depth)]


def separate_partitions(tasks: Sequence[str], depth: int) -> Partitions:
    """One branch per task from the root (independent single-task networks)."""
    return [[[t] for t in tasks] for _ in range(depth)]


# ---------------------------------------------------------------------------------------
# tree.json

_KNOWN_KEYS = {"tasks", "locations", "partitions", "params", "flops", "dissimilarity", "budget",
               "backbone", "method", "notes", "costs"}


def tree_from_json(obj: Any, source: str = "tree") -> Tree:
    """Validate a parsed ``tree.json`` object and return the :class:`Tree`."""
    if not isinstance(obj, dict):
        raise BadInput(f"{source}: expected a JSON object with tasks, locations, partitions, ...; "
                       f"got {type(obj).__name__}")
    for key in ("tasks", "locations", "partitions"):
        if key not in obj:
            raise BadInput(f"{source}: missing key '{key}'; a tree.json needs tasks, locations and partitions")
    names: dict[str, list[str]] = {}
    for key in ("tasks", "locations"):
        value = obj[key]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise BadInput(f"{source}: '{key}' must be a non-empty list of names")
        seen: set[str] = set()
        for v in value:
            if v in seen:
                kind = "task" if key == "tasks" else "location"
                raise BadInput(f"{source}: {kind} '{v}' is named twice; names must be unique")
            seen.add(v)
        names[key] = list(value)
    partitions = obj["partitions"]
    if not isinstance(partitions, list) or len(partitions) != len(names["locations"]):
        count = len(partitions) if isinstance(partitions, list) else "no list of"
        raise BadInput(f"{source}: 'partitions' has {count} partitions but there are "
                       f"{len(names['locations'])} locations; give one partition per location")
    partitions = check_partitions(partitions, names["tasks"], source)

    def number(key: str, value: Any, allow_none: bool = True) -> float | int | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadInput(f"{source}: '{key}' must be a finite number{' or null' if allow_none else ''}, got {value!r}")
        return value

    budget = obj.get("budget", {"params": None, "flops": None})
    if budget is None:
        budget = {"params": None, "flops": None}
    if not isinstance(budget, dict):
        raise BadInput(f"{source}: 'budget' must be an object {{\"params\": ..., \"flops\": ...}}")
    budget = {"params": number("budget.params", budget.get("params")),
              "flops": number("budget.flops", budget.get("flops"))}
    diss = obj.get("dissimilarity")
    notes = obj.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise BadInput(f"{source}: 'notes' must be a list of strings")
    backbone = obj.get("backbone")
    if backbone is not None and not isinstance(backbone, str):
        raise BadInput(f"{source}: 'backbone' must be a name (string)")
    method = obj.get("method")
    if method is not None and not isinstance(method, str):
        raise BadInput(f"{source}: 'method' must be a string")
    costs = obj.get("costs")
    if costs is not None:
        if not isinstance(costs, dict):
            raise BadInput(f"{source}: 'costs' must be an object with stage_params, head_params, ...")
        sizes = {"stage_params": len(names["locations"]), "head_params": len(names["tasks"]),
                 "stage_flops": len(names["locations"]), "head_flops": len(names["tasks"])}
        for key, value in costs.items():
            if key not in sizes:
                raise BadInput(f"{source}: unknown key 'costs.{key}'; expected {', '.join(sizes)}")
            if value is None:
                continue
            if (not isinstance(value, list) or len(value) != sizes[key]
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                               for v in value)):
                raise BadInput(f"{source}: 'costs.{key}' must be a list of {sizes[key]} non-negative numbers")
        costs = {key: costs.get(key) for key in sizes}
    return Tree(tasks=names["tasks"], locations=names["locations"], partitions=partitions,
                costs=costs,
                params=number("params", obj.get("params"), allow_none=True) or 0,
                flops=number("flops", obj.get("flops")),
                dissimilarity=float(number("dissimilarity", diss)) if diss is not None else float("nan"),
                budget=budget, backbone=backbone, method=method, notes=list(notes),
                extra={k: v for k, v in obj.items() if k not in _KNOWN_KEYS})


def load_tree(path: str | os.PathLike) -> Tree:
    """Read and validate a ``tree.json``; :class:`BadInput` (one line) on any defect.

    Checks the JSON shape, that every partition holds every task exactly once, that the
    partitions nest (P_d refines P_{d-1}), unique task names and one partition per location.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"tree file {path} is a directory; give a tree.json (e.g. runs/scenes/tree.json)")
    if not path.is_file():
        raise BadInput(f"tree file {path} does not exist; create it with `branchnet build`")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        return tree_from_json(obj, f"tree file {path}")
    except UnicodeDecodeError:
        raise BadInput(f"tree file {path} is not UTF-8 text; expected a tree.json") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"tree file {path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    except RecursionError:
        raise BadInput(f"tree file {path} is nested far too deeply to be a tree.json (partitions are lists of "
                       "groups of task names)") from None


def save_tree(path: str | os.PathLike, tree: Tree) -> Path:
    """Validate ``tree`` and write it to ``path`` as ``tree.json`` atomically."""
    tree_from_json(json.loads(json.dumps(tree.to_json())), "tree")  # validate before writing anything
    return atomic_write_json(path, tree.to_json())

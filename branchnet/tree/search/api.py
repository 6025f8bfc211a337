"""The public calls of the tree search: :func:`search_tree`, :func:`pareto_sweep` and
:func:`build_problem`, with the cost and latency checks they share (the package docstring of
:mod:`branchnet.tree.search` describes the algorithms and the tie-breaking order)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from branchnet.affinity import AffinityData
from branchnet.errors import BadInput, unknown_choice
from branchnet.tree.search.problem import (TIE_TOL, Problem, canonical_labels, labels_to_partitions,
                                           separate_labels, shared_labels, within)
from branchnet.tree import Tree
from branchnet.tree.group_cost import GroupCost, resolve_cost
from branchnet.units import format_count, format_latency

METHODS = ("auto", "exact", "scalable")
#: ``method="auto"`` uses the exact search up to this many tasks.
AUTO_EXACT_MAX_TASKS = 10


def resolve_costs(affinity: AffinityData, stage_params: Sequence[float] | None = None,
                  head_params: Sequence[float] | None = None, stage_flops: Sequence[float] | None = None,
                  head_flops: Sequence[float] | None = None) -> dict[str, np.ndarray | None]:
    """Per-stage and per-head costs: explicit arrays override the affinity file's.

    Returns ``{"stage_params": (D,), "head_params": (N,), "stage_flops": (D,)|None,
    "head_flops": (N,)|None}``; FLOPs are None unless both stage and head FLOPs are known.
    Raises :class:`BadInput` when params are unknown or an array has the wrong length.
    """
    d, n = affinity.num_locations, affinity.num_tasks
    out: dict[str, np.ndarray | None] = {}
    for key, given, size, what in (("stage_params", stage_params, d, "stages"),
                                   ("head_params", head_params, n, "tasks"),
                                   ("stage_flops", stage_flops, d, "stages"),
                                   ("head_flops", head_flops, n, "tasks")):
        value = given if given is not None else getattr(affinity, key)
        if value is None:
            out[key] = None
            continue
        out[key] = _per_item(key, value, size, what, "numbers")
    if out["stage_params"] is None or out["head_params"] is None:
        missing = " and ".join(k for k in ("stage_params", "head_params") if out[k] is None)
        raise BadInput(f"no {missing} to cost the trees with: the affinity file has none; pass "
                       "--stage-params/--head-params (one count per stage / per task; an affinity made by "
                       "`branchnet affinity --config` carries them)")
    if out["stage_flops"] is None or out["head_flops"] is None:
        out["stage_flops"] = out["head_flops"] = None
    return out


def _per_item(key: str, value: Any, size: int, what: str, unit: str) -> np.ndarray:
    """``value`` as a (size,) float64 array of one finite non-negative entry per stage or task."""
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape[0] != size:
        raise BadInput(f"{key.replace('_', '-')} has {arr.shape[0]} values but there are {size} {what}; "
                       f"give one per {what[:-1]}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise BadInput(f"{key.replace('_', '-')} must hold finite non-negative {unit}")
    return arr


def resolve_latency(affinity: AffinityData, stage_latency: Sequence[float] | None = None,
                    head_latency: Sequence[float] | None = None) -> dict[str, np.ndarray | None]:
    """Per-stage (D,) and per-head (N,) latencies in seconds, or both None when not given.

    Latency is never in an affinity file (it belongs to a device and a batch size); it
    comes from a measured table (``steps.build.latency_probe``) or explicit arrays.
    Raises :class:`BadInput` when only one of the two is given, an array has the wrong
    length, or a value is negative or not finite.
    """
    if (stage_latency is None) != (head_latency is None):
        raise BadInput("a latency table needs both stage_latency (one per stage) and head_latency (one per task)")
    if stage_latency is None:
        return {"stage_latency": None, "head_latency": None}
    out: dict[str, np.ndarray | None] = {}
    for key, given, size, what in (("stage_latency", stage_latency, affinity.num_locations, "stages"),
                                   ("head_latency", head_latency, affinity.num_tasks, "tasks")):
        out[key] = _per_item(key, given, size, what, "seconds")
    return out


def build_problem(affinity: AffinityData, params_budget: float | None, flops_budget: float | None = None,
                  cost: str | GroupCost | None = "max", latency_budget: float | None = None,
                  **costs: Any) -> Problem:
    """The index-form search problem; checks that the budget admits the all-shared tree.

    ``cost`` is the group cost (:func:`~branchnet.tree.group_cost.resolve_cost`);
    ``costs`` are optional explicit ``stage_params``, ``head_params``, ``stage_flops``,
    ``head_flops`` overriding the affinity file's, and ``stage_latency``/``head_latency``
    (seconds) for ``latency_budget`` (seconds).
    """
    return _setup(affinity, params_budget, flops_budget, costs, resolve_cost(cost, affinity.tasks),
                  latency_budget)[0]


def _split_latency(costs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the params/FLOPs costs, the latency arrays) of a ``costs`` dict."""
    latency = {k: costs.get(k) for k in ("stage_latency", "head_latency")}
    return {k: v for k, v in costs.items() if k not in latency}, latency


def _setup(affinity: AffinityData, params_budget: float | None, flops_budget: float | None,
           costs: dict[str, Any], cost: GroupCost | None = None,
           latency_budget: float | None = None,
           min_params: float | None = None) -> tuple[Problem, dict[str, np.ndarray | None]]:
    costs, latency = _split_latency(costs)
    c = resolve_costs(affinity, **costs)
    lat = resolve_latency(affinity, **latency)
    if flops_budget is not None and c["stage_flops"] is None:
        raise BadInput("a FLOPs budget needs FLOPs per stage and per head, and the affinity file has none; "
                       "drop the FLOPs budget or use an affinity made by `branchnet affinity --config`")
    if latency_budget is not None and lat["stage_latency"] is None:
        raise BadInput("a latency budget needs measured latencies per stage and per head; measure them with "
                       "`branchnet build --latency ... --profile-device cpu|cuda` (or pass the arrays)")
    cost = cost or GroupCost()
    problem = Problem(dist=cost.distances(1.0 - np.asarray(affinity.affinity, dtype=np.float64)),
                      stage_params=c["stage_params"], head_params=float(c["head_params"].sum()),
                      stage_flops=c["stage_flops"],
                      head_flops=float(c["head_flops"].sum()) if c["head_flops"] is not None else None,
                      max_params=params_budget, max_flops=flops_budget, form=cost.form,
                      stage_latency=lat["stage_latency"],
                      head_latency=float(lat["head_latency"].sum()) if lat["head_latency"] is not None else None,
                      max_latency=latency_budget, min_params=min_params)
    ones = np.ones(problem.depth, dtype=np.int64)
    for what, budget, cost in (("params", params_budget, problem.params_of(ones)),
                               ("FLOPs", flops_budget, problem.flops_of(ones))):
        if budget is not None and not within(float(cost), budget):
            raise BadInput(f"{what} budget {format_count(budget)} is below the all-shared network, the smallest "
                           f"tree ({format_count(float(cost))} {what}); the minimum feasible budget is "
                           f"{float(cost):.0f}")
    if latency_budget is not None:
        shared = float(problem.latency_of(ones))
        if not within(shared, latency_budget):
            raise BadInput(f"latency budget {format_latency(latency_budget)} is below the all-shared network's measured "
                           f"latency ({format_latency(shared)}, the sum of its stages' and heads' measured latencies), "
                           f"the fastest tree; the minimum feasible budget is {format_latency(shared)}")
    if min_params is not None and not len(problem.count_vectors()):
        high = "" if params_budget is None else f" to {format_count(params_budget)}"
        raise BadInput(f"no tree has params in the window {format_count(min_params)}{high} (and fits the other "
                       "budgets); widen the window or choose another budget")
    if lat["stage_latency"] is not None:
        c = {**c, **lat}
    return problem, c


def _pick_method(method: str, n: int, cost: GroupCost | None = None, window: bool = False) -> str:
    from branchnet.tree.search.exact import MAX_EXACT_TASKS

    if method not in METHODS:
        raise unknown_choice("search method", method, METHODS)
    if window:
        if method == "scalable" or n > MAX_EXACT_TASKS:
            raise BadInput(f"a tree in a params window is searched exactly only, and the exact search handles at "
                           f"most {MAX_EXACT_TASKS} tasks; there are {n}")
        return "exact"
    if cost is not None and cost.form != "max":
        if method == "scalable" or n > MAX_EXACT_TASKS:
            raise BadInput(f"the {cost.name} cost is searched exactly only (the scalable search works on group "
                           f"diameters), and the exact search handles at most {MAX_EXACT_TASKS} tasks; "
                           f"there are {n}: use --cost max or --cost sensitivity, or fewer tasks")
        return "exact"
    if method == "auto":
        return "exact" if n <= AUTO_EXACT_MAX_TASKS else "scalable"
    if method == "exact" and n > MAX_EXACT_TASKS:
        raise BadInput(f"the exact search handles at most {MAX_EXACT_TASKS} tasks (its time grows like 3^N) "
                       f"and there are {n}; use the scalable search (the default)")
    return method


def _count_key(problem: Problem, counts: np.ndarray, value: float) -> tuple:
    """(dissimilarity, params, flops, latency, counts): the tie-breaking order of docs/design.md."""
    flops = problem.flops_of(counts)
    latency = problem.latency_of(counts)
    return (float(value), float(problem.params_of(counts)), float(flops) if flops is not None else 0.0,
            float(latency) if latency is not None else 0.0, tuple(int(c) for c in counts))


def _labels_key(problem: Problem, labels: np.ndarray) -> tuple:
    counts = np.array([len(np.unique(row)) for row in labels])
    return _count_key(problem, counts, problem.dissimilarity(labels))


def _to_tree(labels: np.ndarray, affinity: AffinityData, costs: dict[str, np.ndarray | None], method: str,
             budget: dict[str, float | None], cost: GroupCost | None = None,
             latency_budget: float | None = None) -> Tree:
    """The priced :class:`Tree` of ``labels``; with a latency table its modelled latency goes to
    ``tree.extra["latency"]`` (``predicted_s``, ``budget_s``; tree.json keeps it)."""
    from branchnet.tree import make_tree

    costs, latency = _split_latency(costs)
    tree = make_tree(labels_to_partitions(labels, affinity.tasks), affinity.tasks, affinity.locations,
                     affinity.affinity, budget=budget, backbone=affinity.backbone, method=method,
                     cost=cost or "max", **costs)
    if latency["stage_latency"] is not None:
        tree.extra["latency"] = {"predicted_s": tree_latency(tree.partitions, latency["stage_latency"],
                                                             latency["head_latency"]),
                                 "budget_s": latency_budget}
    return tree


def tree_latency(partitions: list, stage_latency: Sequence[float], head_latency: Sequence[float]) -> float:
    """The latency model of a tree: ``sum_d |P_d| * stage_latency[d] + sum_t head_latency[t]`` (seconds)."""
    counts = np.array([len(p) for p in partitions], dtype=np.float64)
    return float(counts @ np.asarray(stage_latency, dtype=np.float64)
                 + np.asarray(head_latency, dtype=np.float64).sum())


def search_tree(affinity: AffinityData, params_budget: float | None, flops_budget: float | None = None,
                method: str = "auto", *, stage_params: Sequence[float] | None = None,
                head_params: Sequence[float] | None = None, stage_flops: Sequence[float] | None = None,
                head_flops: Sequence[float] | None = None, cost: str | GroupCost | None = "max",
                latency_budget: float | None = None, stage_latency: Sequence[float] | None = None,
                head_latency: Sequence[float] | None = None, min_params: float | None = None) -> Tree:
    """The tree of least dissimilarity whose params (and FLOPs, and modelled latency) fit the budget.

    Args:
        affinity: validated task affinities (D, N, N) with costs (or pass them explicitly).
        params_budget: largest params of the whole network (stages and heads), or None.
        flops_budget: largest FLOPs per image, or None (needs FLOPs costs).
        method: ``"auto"`` (exact up to :data:`AUTO_EXACT_MAX_TASKS` tasks, else scalable),
            ``"exact"`` (provably optimal) or ``"scalable"`` (local search, many tasks).
        stage_params, head_params, stage_flops, head_flops: explicit costs, (D,) and (N,),
            overriding those in the affinity file.
        cost: the group cost the dissimilarity adds up (:mod:`branchnet.tree.group_cost`);
            ``"max"`` is the paper's. Costs other than ``max``/``sensitivity`` always use the
            exact search (N <= 14).
        latency_budget: largest modelled latency in seconds, or None (needs the tables).
        stage_latency, head_latency: measured seconds of one copy of each stage (D,) and
            of each head (N,) on one device and batch size; the tree's modelled latency is
            their sum over its nodes (:func:`tree_latency`).
        min_params: the least params the tree may have (a budget window ``[min_params,
            params_budget]``, e.g. ``[0.9 B, B]``), or None; searched exactly (N <= 14).

    Returns the :class:`~branchnet.tree.Tree`; ``tree.method`` says which search ran and
    ``tree.notes`` holds remarks (a budget above the all-separate network); its
    dissimilarity is under ``cost`` (recorded in ``tree.extra["cost"]`` unless ``max``).

    Raises :class:`BadInput` for a budget below the all-shared network (naming the
    minimum), missing costs, or an unknown method or cost.
    """
    group_cost = resolve_cost(cost, affinity.tasks)
    problem, costs = _setup(affinity, params_budget, flops_budget,
                            dict(stage_params=stage_params, head_params=head_params,
                                 stage_flops=stage_flops, head_flops=head_flops,
                                 stage_latency=stage_latency, head_latency=head_latency),
                            group_cost, latency_budget, min_params)
    chosen = _pick_method(method, affinity.num_tasks, group_cost, window=min_params is not None)
    if chosen == "exact":
        from branchnet.tree.search.exact import exact_search

        labels = exact_search(problem)
    else:
        from branchnet.tree.search.scalable import scalable_search

        labels = scalable_search(problem)
    budget = {"params": params_budget, "flops": flops_budget}
    tree = _to_tree(labels, affinity, costs, chosen, budget, group_cost, latency_budget)
    everyone = np.full(problem.depth, problem.num_tasks)
    if params_budget is not None and within(float(problem.params_of(everyone)), params_budget) and (
            flops_budget is None or within(float(problem.flops_of(everyone)), flops_budget)) and (
            latency_budget is None or within(float(problem.latency_of(everyone)), latency_budget)):
        tree.notes.append(f"the budget is at or above the all-separate network "
                          f"({format_count(float(problem.params_of(everyone)))} params): every task can have "
                          "its own branch, so the budget does not bind")
    return tree


def pareto_sweep(affinity: AffinityData, flops_budget: float | None = None, method: str = "auto", *,
                 stage_params: Sequence[float] | None = None, head_params: Sequence[float] | None = None,
                 stage_flops: Sequence[float] | None = None, head_flops: Sequence[float] | None = None,
                 scalable_budgets: int = 24, cost: str | GroupCost | None = "max",
                 latency_budget: float | None = None, stage_latency: Sequence[float] | None = None,
                 head_latency: Sequence[float] | None = None) -> list[Tree]:
    """Every distinct optimal tree as the params budget grows from all-shared to all-separate.

    Returns trees in increasing params (and decreasing dissimilarity): tree i is the
    answer of :func:`search_tree` for every params budget in
    ``[trees[i].params, trees[i+1].params)``; the first is the all-shared tree's budget,
    the last reaches dissimilarity 0 or the FLOPs cap. Each tree's ``budget["params"]``
    is its own params. With the exact method the path is complete and exact (one dynamic
    program for all budgets); the scalable method searches ``scalable_budgets`` budgets
    spaced evenly in params and keeps the trees no other tree beats. ``cost`` as in
    :func:`search_tree`; a ``latency_budget`` (with its tables) caps the path like the FLOPs
    budget.
    """
    costs = dict(stage_params=stage_params, head_params=head_params, stage_flops=stage_flops,
                 head_flops=head_flops, stage_latency=stage_latency, head_latency=head_latency)
    group_cost = resolve_cost(cost, affinity.tasks)
    problem, resolved = _setup(affinity, None, flops_budget, costs, group_cost, latency_budget)
    chosen = _pick_method(method, affinity.num_tasks, group_cost)
    if chosen == "exact":
        found = _exact_sweep(problem)
    else:
        found = _scalable_sweep(problem, flops_budget, scalable_budgets)
    trees = []
    for labels in found:
        counts = np.array([len(np.unique(row)) for row in labels])
        params = float(problem.params_of(counts))
        trees.append(_to_tree(labels, affinity, resolved, chosen, {"params": params, "flops": flops_budget},
                              group_cost, latency_budget))
    return trees


def _staircase(keys: list[tuple]) -> list[int]:
    """Indices of the entries that are optimal for some params budget, by increasing params."""
    order = sorted(range(len(keys)), key=lambda i: (keys[i][1], keys[i][0], keys[i][2], keys[i][3], keys[i][4]))
    path: list[int] = []
    for i in order:
        if not path:
            path.append(i)
            continue
        last = keys[path[-1]]
        if keys[i][0] < last[0] - TIE_TOL:  # strictly less dissimilar for more params
            if keys[i][1] == last[1]:
                path[-1] = i
            else:
                path.append(i)
    return path


def _exact_sweep(problem: Problem) -> list[np.ndarray]:
    from branchnet.tree.search.exact import SubsetTables, exact_frontier, greedy_tree
    from branchnet.tree.search.local import local_search

    tables = SubsetTables.build(problem.dist, problem.form)
    counts = problem.count_vectors()
    # Upper bounds: quick trees for every count vector, polished along their own staircase.
    quick: list[tuple[tuple, np.ndarray]] = []
    for k in counts:
        labels = greedy_tree(tables, k)
        if labels is not None:
            quick.append((_labels_key(problem, labels), labels))
    for i in (_staircase([key for key, _ in quick]) if problem.form == "max" else []):
        labels = local_search(problem, quick[i][1])  # the local search knows the max form only
        quick.append((_labels_key(problem, labels), labels))
    quick.sort(key=lambda item: item[0][1])
    params = problem.params_of(counts)
    upper = np.full(len(counts), np.inf)
    best, j = np.inf, 0
    for i in np.argsort(params, kind="stable"):
        while j < len(quick) and quick[j][0][1] <= params[i]:
            best = min(best, quick[j][0][0])
            j += 1
        upper[i] = best
    frontier = exact_frontier(problem, counts, upper, tables)
    keys = [_count_key(problem, frontier.counts[r], frontier.values[r]) for r in range(len(frontier.counts))]
    return [canonical_labels(frontier.labels(r)) for r in _staircase(keys)]


def _scalable_sweep(problem: Problem, flops_budget: float | None, budgets: int) -> list[np.ndarray]:
    from branchnet.tree.search.scalable import scalable_search

    ones = np.ones(problem.depth, dtype=np.int64)
    lo = float(problem.params_of(ones))
    hi = float(problem.params_of(ones * problem.num_tasks))
    found: list[tuple[tuple, np.ndarray]] = []
    for budget in np.linspace(lo, hi, max(2, budgets)):
        sub = Problem(problem.dist, problem.stage_params, problem.head_params, problem.stage_flops,
                      problem.head_flops, max_params=float(budget), max_flops=flops_budget,
                      stage_latency=problem.stage_latency, head_latency=problem.head_latency,
                      max_latency=problem.max_latency)
        labels = scalable_search(sub)
        found.append((_labels_key(problem, labels), labels))
    if problem.fits(ones * problem.num_tasks):
        labels = separate_labels(problem.depth, problem.num_tasks)
        found.append((_labels_key(problem, labels), labels))
    labels = shared_labels(problem.depth, problem.num_tasks)
    found.append((_labels_key(problem, labels), labels))
    return [canonical_labels(found[i][1]) for i in _staircase([key for key, _ in found])]

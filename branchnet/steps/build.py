"""The ``branchnet build`` step as one library call: search, sweep, write, and report.

:func:`build_tree` runs :func:`~branchnet.tree.search.search_tree` (and, when asked,
:func:`~branchnet.tree.search.pareto_sweep`), writes ``tree.json`` (and ``sweep.png``)
atomically, and returns a :class:`~branchnet.tree.report.BuildReport` that prints the tree
with its costs beside those of the all-shared and all-separate networks.
:func:`costs_from_backbone` builds a network to count costs: the search itself only sees
arrays. :func:`list_trees` is ``build --random K`` / ``build --exhaustive``: populations of
trees (:mod:`branchnet.tree.sampling`), and :func:`group_cost_for` resolves ``--cost``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from branchnet.affinity import AffinityData
from branchnet.tree import save_tree, separate_tree, shared_tree
from branchnet.tree.group_cost import GroupCost
from branchnet.tree.report import BuildReport, plot_sweep


def costs_from_backbone(config: Any, tasks: list[str], backbone: str | None = None,
                        input_size: tuple[int, int] | None = None) -> dict[str, list[float]]:
    """Stage and head costs of ``backbone`` at ``input_size`` with the config's heads.

    For an affinity file without costs (one made with ``branchnet affinity --features``):
    builds the staged encoder (random init, nothing downloaded) with one head per task of
    ``tasks``, typed as in ``config``, and counts parameters and per-image FLOPs
    (``torch.utils.flop_counter``). ``backbone``/``input_size`` default to the config's.

    Returns ``{"stage_params": [D], "stage_flops": [D], "head_params": [N], "head_flops": [N]}``
    with heads in ``tasks`` order. Raises :class:`BadInput` for a task the config lacks or
    an unknown backbone.
    """
    import dataclasses

    from branchnet.nn.backbones import NUM_STAGES
    from branchnet.data import build_tasks
    from branchnet.errors import BadInput
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import shared_partitions

    by_name = {t.name: t for t in build_tasks(config)}
    missing = [t for t in tasks if t not in by_name]
    if missing:
        raise BadInput(f"task(s) {', '.join(missing)} of the affinity file are not in config {config.source} "
                       f"(it has {', '.join(by_name)}); use a config with these tasks, or give --head-params")
    model_cfg = dataclasses.replace(config.model, backbone=backbone) if backbone else config.model
    size = tuple(input_size) if input_size is not None else config.image_size
    if len(size) != 2 or min(size) < 8:
        raise BadInput(f"--input-size {' '.join(map(str, size))} must be two sizes H W of at least 8 pixels")
    net = BranchedNet([by_name[t] for t in tasks], shared_partitions(list(tasks), NUM_STAGES), model_cfg, size)
    costs = net.costs()
    return {"stage_params": [float(v) for v in costs["stage_params"]],
            "stage_flops": [float(v) for v in costs["stage_flops"]],
            "head_params": [float(costs["head_params"][t]) for t in tasks],
            "head_flops": [float(costs["head_flops"][t]) for t in tasks]}


def build_tree(affinity: AffinityData, params_budget: float | None, flops_budget: float | None = None,
               method: str = "auto", sweep: bool = False, costs: dict[str, Any] | None = None,
               out: str | os.PathLike | None = None,
               affinity_path: str | os.PathLike | None = None, cost: str | GroupCost | None = "max") -> BuildReport:
    """Search (and sweep), then write ``tree.json`` and ``sweep.png``; returns the report.

    ``out`` defaults to ``tree.json`` beside ``affinity_path`` (or the working directory);
    ``sweep.png`` goes beside ``out``. ``cost`` is the group cost the dissimilarity adds up
    (:mod:`branchnet.tree.group_cost`; :func:`group_cost_for` resolves ``--cost``). Nothing
    is written when the input is bad.
    """
    from branchnet.tree.search import pareto_sweep, resolve_costs, search_tree

    costs = {k: v for k, v in (costs or {}).items() if v is not None}
    resolved = resolve_costs(affinity, **costs)
    ends = dict(affinity=affinity.affinity, **resolved)
    shared = shared_tree(affinity.tasks, affinity.locations, cost=cost, **ends)
    separate = separate_tree(affinity.tasks, affinity.locations, cost=cost, **ends)
    tree = None
    if params_budget is not None:
        tree = search_tree(affinity, params_budget, flops_budget, method, cost=cost, **costs)
    trees = pareto_sweep(affinity, flops_budget, method, cost=cost, **costs) if sweep else None
    base = Path(affinity_path).parent if affinity_path is not None else Path(".")
    out_path = Path(out) if out is not None else base / "tree.json"
    report = BuildReport(tree, trees, shared, separate)
    if tree is not None:
        report.written.append(save_tree(out_path, tree))
    if trees is not None:
        report.written.append(plot_sweep(trees, out_path.parent / "sweep.png"))
    return report


def group_cost_for(name: str | None, affinity: AffinityData, shared_metrics: str | os.PathLike | None = None,
                   affinity_path: str | os.PathLike | None = None) -> GroupCost:
    """The :class:`~branchnet.tree.group_cost.GroupCost` of ``build --cost NAME``.

    ``sensitivity`` reads the per-task Δ (``delta_mtl.test.per_task``) of the all-shared
    network from ``shared_metrics``, by default ``branched/shared/metrics.json`` in the run
    directory of ``affinity_path`` (where ``branchnet run`` trains it). Raises
    :class:`BadInput` for an unknown name or a missing or unsuitable metrics file.
    """
    import json

    from branchnet.errors import BadInput
    from branchnet.tree.group_cost import resolve_cost, sensitivity_cost, shared_per_task_delta

    if name != "sensitivity":
        if shared_metrics is not None:
            raise BadInput("--shared-metrics only serves --cost sensitivity")
        return resolve_cost(name or "max", affinity.tasks)
    if shared_metrics is None:
        base = Path(affinity_path).parent if affinity_path is not None else Path(".")
        shared_metrics = base / "branched" / "shared" / "metrics.json"
        if not shared_metrics.is_file():
            raise BadInput(f"--cost sensitivity weighs tasks by their loss in the all-shared network, and there is "
                           f"no {shared_metrics}; train it (`branchnet train --tree shared` or `branchnet run`) "
                           "or point --shared-metrics at its metrics.json")
    path = Path(shared_metrics)
    if not path.is_file():
        raise BadInput(f"--shared-metrics {path} does not exist; give the all-shared network's metrics.json")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"--shared-metrics {path} is not a JSON metrics file ({exc})") from None
    return sensitivity_cost(shared_per_task_delta(metrics, str(path)), affinity.tasks)


def list_trees(affinity: AffinityData, params_budget: float | None, *, random: int | None = None, seed: int = 0,
               exhaustive: bool = False, branch_stages: int | None = None, costs: dict[str, Any] | None = None,
               cost: str | GroupCost | None = "max", out: str | os.PathLike | None = None):
    """``build --random K`` or ``build --exhaustive``: a population of priced trees.

    ``random``: K distinct trees drawn uniformly from the budget window of ``params_budget``
    (needed), all of them when it holds fewer (:func:`branchnet.tree.sampling.random_trees`);
    ``exhaustive``: every tree, in the window when ``params_budget`` is given
    (:func:`branchnet.tree.sampling.all_trees`, which refuses too many). ``out``, when given,
    receives the JSON list of tree.json objects (atomically). Returns the
    :class:`~branchnet.tree.sampling.Population`.
    """
    from branchnet.atomic import atomic_write_json
    from branchnet.errors import BadInput
    from branchnet.tree.sampling import all_trees, random_trees

    if (random is None) == (not exhaustive):
        raise BadInput("give one of --random K (random trees of a budget window) or --exhaustive (every tree)")
    costs = {k: v for k, v in (costs or {}).items() if v is not None}
    if random is not None:
        if params_budget is None:
            raise BadInput(f"--random {random} draws trees of a budget window [0.9 B, B]: give --params B")
        population = random_trees(affinity, params_budget, random, seed, costs, branch_stages, cost)
    else:
        population = all_trees(affinity, params_budget, costs, branch_stages, cost=cost)
    if out is not None:
        atomic_write_json(out, [t.to_json() for t in population.trees])
    return population

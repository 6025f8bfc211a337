"""The ``branchnet build`` step as one library call: search, sweep, write, and report.

:func:`build_tree` runs :func:`~branchnet.tree.search.search_tree` (and, when asked,
:func:`~branchnet.tree.search.pareto_sweep`), writes ``tree.json`` (and ``sweep.png``)
atomically, and returns a :class:`~branchnet.tree.report.BuildReport` that prints the tree
with its costs beside those of the all-shared and all-separate networks.
:func:`costs_from_backbone` builds a network to count costs: the search itself only sees
arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from branchnet.affinity import AffinityData
from branchnet.tree import save_tree, separate_tree, shared_tree
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
               affinity_path: str | os.PathLike | None = None) -> BuildReport:
    """Search (and sweep), then write ``tree.json`` and ``sweep.png``; returns the report.

    ``out`` defaults to ``tree.json`` beside ``affinity_path`` (or the working directory);
    ``sweep.png`` goes beside ``out``. Nothing is written when the input is bad.
    """
    from branchnet.tree.search import pareto_sweep, resolve_costs, search_tree

    costs = {k: v for k, v in (costs or {}).items() if v is not None}
    resolved = resolve_costs(affinity, **costs)
    ends = dict(affinity=affinity.affinity, **resolved)
    shared = shared_tree(affinity.tasks, affinity.locations, **ends)
    separate = separate_tree(affinity.tasks, affinity.locations, **ends)
    tree = None
    if params_budget is not None:
        tree = search_tree(affinity, params_budget, flops_budget, method, **costs)
    trees = pareto_sweep(affinity, flops_budget, method, **costs) if sweep else None
    base = Path(affinity_path).parent if affinity_path is not None else Path(".")
    out_path = Path(out) if out is not None else base / "tree.json"
    report = BuildReport(tree, trees, shared, separate)
    if tree is not None:
        report.written.append(save_tree(out_path, tree))
    if trees is not None:
        report.written.append(plot_sweep(trees, out_path.parent / "sweep.png"))
    return report

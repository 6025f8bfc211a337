"""``branchnet run``: the whole pipeline, end to end, and its report.

1. train-single (models trained with the same settings are kept; others stop the run
   with exit 2 naming the setting, or are retrained with ``force``);
2. affinity of the single-task models on the held-out affinity split;
3. build the tree of least dissimilarity under the budget (and the Pareto sweep);
4. train the branched network of the tree (``branched/tree-<budget>``) and the all-shared
   and all-separate baselines (``branched/shared``, ``branched/separate``), by the same
   reuse rule;
5. write ``report.md`` and ``report.json`` (:mod:`branchnet.steps.report`).

Every step reads the artifacts of the step before from the run directory, so an
interrupted run picks up where it stopped. Under ``torchrun`` every rank trains and rank 0
alone measures the affinity, builds the tree and writes the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from branchnet.atomic import ensure_writable_dir
from branchnet.config import Config
from branchnet.errors import BadInput
from branchnet.nn import NUM_STAGES
from branchnet.progress import say
from branchnet.runs import tree_path
from branchnet import distributed as dist_utils
from branchnet.units import format_count, parse_budget


def default_budget(affinity) -> float:
    """Halfway between the all-shared and all-separate networks' parameters."""
    from branchnet.tree import separate_tree, shared_tree
    from branchnet.tree.search import resolve_costs

    costs = resolve_costs(affinity)
    ends = dict(affinity=affinity.affinity, **costs)
    low = shared_tree(affinity.tasks, affinity.locations, **ends).params
    high = separate_tree(affinity.tasks, affinity.locations, **ends).params
    return (low + high) / 2


def tree_network_name(params_budget: float, flops_budget: float | None = None) -> str:
    """``tree-2M`` (``tree-2M-200MFLOPs``): the branched network of a budget's tree, so a run at
    another budget trains its own network and keeps the others."""
    name = f"tree-{format_count(params_budget, digits=6)}"
    return name + (f"-{format_count(flops_budget, digits=6)}FLOPs" if flops_budget is not None else "")


def check_feasible(config: Config, params_budget: float) -> None:
    """Fail before any training when the budget is below the all-shared network."""
    from branchnet.data import build_tasks
    from branchnet.nn import BranchedNet
    from branchnet.tree import shared_partitions

    tasks = build_tasks(config)
    shared = BranchedNet(tasks, shared_partitions([t.name for t in tasks], NUM_STAGES), config.model, config.image_size)
    minimum = sum(p.numel() for p in shared.parameters())
    if params_budget < minimum:
        raise BadInput(f"--params {format_count(params_budget)} is below the all-shared {config.model.backbone} "
                       f"network of these tasks ({format_count(minimum)} = {minimum} params); give at least that")


def _check_networks(config: Config, runs: Path, tree: Any, tree_name: str, force: bool) -> None:
    """Every check of step 4 (:func:`branchnet.steps.train_branched.check_branched`) on the budget's
    tree and the two baselines, before step 2 writes the affinity and step 3 the tree."""
    from branchnet.steps.train_branched import check_branched
    from branchnet.tree import separate_partitions, shared_partitions

    names = config.task_names
    for name, partitions in ((tree_name, tree), ("shared", shared_partitions(names, NUM_STAGES)),
                             ("separate", separate_partitions(names, NUM_STAGES))):
        check_branched(config, runs, partitions, name, force=force, quiet=True, allow_plain=name == "separate")


def run_pipeline(config: Config, runs: Path, params: str | float | None = None, flops: str | float | None = None,
                 *, force: bool = False, quiet: bool = False) -> dict[str, Any] | None:
    """Run every step for ``config`` in ``runs``; returns the report (also written to disk;
    None on torchrun ranks other than 0).

    ``params``/``flops`` are budgets (``"1.5M"``); without ``params`` the config's
    ``branched.params`` is used, else halfway between all-shared and all-separate.
    """
    from branchnet.affinity.outputs import write_affinity_outputs
    from branchnet.runs import affinity_path
    from branchnet.steps.affinity import measure_affinity
    from branchnet.steps.build import build_tree
    from branchnet.steps.report import make_report
    from branchnet.steps.train_branched import train_branched
    from branchnet.steps.train_single import train_single
    from branchnet.tree.export import export_tree

    runs = Path(runs)
    main = dist_utils.is_main()
    params = params if params is not None else config.branched.params
    flops = flops if flops is not None else config.branched.flops
    params_budget = parse_budget(params, "--params") if params is not None else None
    flops_budget = parse_budget(flops, "--flops") if flops is not None else None
    if params_budget is not None:
        check_feasible(config, params_budget)
    if main:
        ensure_writable_dir(runs)
    note = say if main else (lambda _message: None)

    note("[1/5] single-task models")
    single = train_single(config, runs, force=force, quiet=quiet)

    note("[2/5] task affinity (RSA)")
    built, affinity_paths, error = None, None, None
    if main:  # measuring and building are deterministic and cheap: rank 0 does them, the others wait
        try:
            data, settings = measure_affinity(config, runs, progress=not quiet)
            note("[3/5] tree under the budget")
            if params_budget is None:
                params_budget = default_budget(data)
                note(f"no --params given: using {format_count(params_budget)}, halfway between all-shared and "
                     "all-separate")
            built = build_tree(data, params_budget, flops_budget, sweep=True, write=False)
            assert built.tree is not None
            _check_networks(config, runs, built.tree.partitions, tree_network_name(params_budget, flops_budget),
                            force)  # a refusal leaves the run's affinity and tree as they were
            affinity_paths = write_affinity_outputs(data, affinity_path(runs), settings)
            built.save(tree_path(runs))
        except BadInput as exc:
            error = str(exc)
    error = dist_utils.broadcast_object(error)
    if error is not None:
        raise BadInput(error)
    if main:
        assert built is not None
        if not quiet:
            built.print()
        export_tree(built.tree, runs / "tree.png", "png")
        export_tree(built.tree, runs / "tree.mmd", "mermaid")
    params_budget = dist_utils.broadcast_object(params_budget)
    dist_utils.barrier()

    note("[4/5] branched network and baselines")
    tree_name = tree_network_name(params_budget, flops_budget)
    networks: dict[str, dict[str, Any]] = {}
    for name, spec in ((tree_name, tree_path(runs)), ("shared", "shared"), ("separate", "separate")):
        networks[name] = train_branched(config, runs, spec, name=name, force=force, quiet=quiet,
                                        allow_plain=spec == "separate")  # the unshared baseline never roams

    if not main:
        return None
    note("[5/5] report")
    return make_report(config, runs, single, networks, tree_name, built, affinity_paths)

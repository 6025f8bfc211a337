"""The ``branchnet build`` step as one library call: search, sweep, write, and report.

:func:`build_tree` runs :func:`~branchnet.tree.search.search_tree` (and, when asked,
:func:`~branchnet.tree.search.pareto_sweep`), writes ``tree.json`` (and ``sweep.png``)
atomically, and returns a :class:`~branchnet.tree.report.BuildReport` that prints the tree
with its costs beside those of the all-shared and all-separate networks.
:func:`costs_from_backbone` builds a network to count costs: the search itself only sees
arrays. :func:`list_trees` is ``build --random K`` / ``build --exhaustive``: populations of
trees (:mod:`branchnet.tree.sampling`), and :func:`group_cost_for` resolves ``--cost``.

Latency budgets (``build --latency 12ms --profile-device cpu --batch 1``):
:func:`latency_probe` measures each stage's and head's latency once on the device and
caches it in the run directory (:func:`branchnet.runs.latency_cache_path`: per device
name, batch and input size); the search sums it over a tree's nodes like FLOPs, and
:func:`build_tree` then measures the chosen tree's real end-to-end latency to set beside
that prediction (docs/deploy.md, "Latency budgets").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from branchnet.affinity import AffinityData
from branchnet.config import Config
from branchnet.tree import separate_tree, shared_tree
from branchnet.tree.group_cost import GroupCost
from branchnet.tree.report import BuildReport


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
               affinity_path: str | os.PathLike | None = None, cost: str | GroupCost | None = "max",
               latency_budget: float | None = None, latency: "LatencyProbe | None" = None,
               window: bool = False, write: bool = True) -> BuildReport:
    """Search (and sweep), then write ``tree.json`` and ``sweep.png`` (``write``; else the
    report's :meth:`~branchnet.tree.report.BuildReport.save` writes them later); returns the report.

    ``out`` defaults to ``tree.json`` beside ``affinity_path`` (or the working directory);
    ``sweep.png`` goes beside ``out``. ``cost`` is the group cost the dissimilarity adds up
    (:mod:`branchnet.tree.group_cost`; :func:`group_cost_for` resolves ``--cost``).
    ``latency_budget`` (seconds) needs ``latency`` (:func:`latency_probe`): its table is the
    third cost of the search, and the chosen tree is then built and timed end to end; both
    figures go to ``tree.extra["latency"]`` (tree.json) and the report. All given budgets
    hold together. ``window``: the tree must also have at least 0.9 of the params budget (the
    budget window of docs/design.md, "Evaluation"; what ``branchnet search`` recommends).
    Nothing is written when the input is bad.
    """
    from branchnet.errors import BadInput
    from branchnet.tree.search import pareto_sweep, resolve_costs, search_tree

    costs = {k: v for k, v in (costs or {}).items() if v is not None}
    if latency_budget is not None and latency is None:
        raise BadInput("a latency budget needs a measured latency table: pass --profile-device (and --batch)")
    if latency is not None:
        costs.update(stage_latency=latency.table.stage, head_latency=latency.table.head)
    resolved = resolve_costs(affinity, **{k: v for k, v in costs.items() if not k.endswith("_latency")})
    ends = dict(affinity=affinity.affinity, **resolved)
    shared = shared_tree(affinity.tasks, affinity.locations, cost=cost, **ends)
    separate = separate_tree(affinity.tasks, affinity.locations, cost=cost, **ends)
    tree = None
    if params_budget is not None or (latency_budget is not None and not sweep):
        if window and params_budget is None:
            raise BadInput("--window is the window [0.9 B, B] of a params budget B; give --params")
        from branchnet.tree.sampling import budget_window

        tree = search_tree(affinity, params_budget, flops_budget, method, cost=cost,
                           latency_budget=latency_budget,
                           min_params=budget_window(params_budget)[0] if window else None, **costs)
    trees = pareto_sweep(affinity, flops_budget, method, cost=cost, latency_budget=latency_budget,
                         **costs) if sweep else None
    base = Path(affinity_path).parent if affinity_path is not None else Path(".")
    out_path = Path(out) if out is not None else base / "tree.json"
    report = BuildReport(tree, trees, shared, separate)
    if latency is not None:
        for end in (shared, separate):
            end.extra["latency"] = {"predicted_s": latency.table.predict(end.partitions)}
        if tree is not None:
            tree.extra["latency"] = {**tree.extra.get("latency", {}), **latency.measure(tree.partitions)}
    if write:
        report.save(out_path)
    return report


def group_cost_for(name: str | None, affinity: AffinityData, shared_metrics: str | os.PathLike | None = None,
                   affinity_path: str | os.PathLike | None = None,
                   model: str | os.PathLike | None = None) -> GroupCost:
    """The :class:`~branchnet.tree.group_cost.GroupCost` of ``build --cost NAME``.

    ``sensitivity`` reads the per-task Δ (``delta_mtl.test.per_task``) of the all-shared
    network from ``shared_metrics``, by default ``branched/shared/metrics.json`` in the run
    directory of ``affinity_path`` (where ``branchnet run`` trains it). ``learned`` is the
    posterior mean of a fitted model (``model``: a model.json of ``branchnet search``, or its
    directory), which must be of the affinity's tasks and stages. Raises :class:`BadInput` for
    an unknown name or a missing or unsuitable metrics or model file.
    """
    import json

    from branchnet.errors import BadInput
    from branchnet.tree.group_cost import learned_cost, resolve_cost, sensitivity_cost, shared_per_task_delta

    if name == "learned":
        from branchnet.learned import load_model

        if model is None:
            raise BadInput("--cost learned needs the fitted model: --model RUNS/search/model.json (made by "
                           "`branchnet search`)")
        fitted = load_model(model)
        if sorted(fitted.tasks) != sorted(affinity.tasks):
            raise BadInput(f"--model {model} is a model of tasks {', '.join(fitted.tasks)} but the affinity file has "
                           f"{', '.join(affinity.tasks)}; give a model fitted on these tasks (`branchnet search`)")
        if len(fitted.locations) != affinity.num_locations:
            raise BadInput(f"--model {model} has {len(fitted.locations)} stages but the affinity file has "
                           f"{affinity.num_locations}; give a model fitted on this backbone")
        order = [fitted.tasks.index(t) for t in affinity.tasks]
        return learned_cost(fitted.pair_costs()[:, order][:, :, order])
    if model is not None:
        raise BadInput("--model only serves --cost learned")
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


@dataclass
class LatencyProbe:
    """A measured :class:`~branchnet.deploy.profile.LatencyTable` and what it takes to time a
    tree of the same tasks, encoder, heads, input size, device and batch end to end."""

    table: Any
    cache: Path
    cached: bool
    tasks: list
    model: Any
    device: Any
    repeats: int
    warmup: int
    seed: int = 0

    def measure(self, partitions: list) -> dict[str, Any]:
        """Build a tree of ``partitions`` (random weights) and time it: its real end-to-end latency
        beside the table's prediction, and the sum of its own parts measured in the same run."""
        import torch

        from branchnet.deploy.profile import profile_networks
        from branchnet.nn.branched import BranchedNet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = BranchedNet(self.tasks, partitions, self.model, self.table.input_size)
        measured = profile_networks({"tree": net}, self.device, self.table.batch, self.table.input_size,
                                    self.repeats, self.warmup, memory=False)["tree"]
        predicted = self.table.predict(partitions)
        return {"predicted_s": predicted, "measured_s": measured.end_to_end.median,
                "measured_spread_s": measured.end_to_end.spread, "parts_now_s": measured.parts_sum,
                "model_error": predicted / measured.end_to_end.median - 1.0,
                "device": self.table.device, "device_type": self.table.device_type, "batch": self.table.batch,
                "input_size": list(self.table.input_size), "threads": self.table.threads,
                "stage_latency_s": list(self.table.stage), "head_latency_s": list(self.table.head),
                "table": str(self.cache), "table_cached": self.cached,
                "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def config_for_latency(config: Config | None, affinity: AffinityData,
                       affinity_path: str | os.PathLike | None) -> Config:
    """The config whose heads the latency is measured with: ``config`` (the one the command
    resolved), else the one stored in a single-task ``model.pt`` of the affinity file's run
    directory. :class:`BadInput` when neither."""
    from branchnet.atomic import load_checkpoint
    from branchnet.config import config_from_dict
    from branchnet.errors import BadInput
    from branchnet.runs import MODEL_FILE, single_dir

    if config is not None:
        return config
    runs = Path(affinity_path).parent if affinity_path is not None else Path(".")
    for task in affinity.tasks:
        path = single_dir(runs, task) / MODEL_FILE
        if path.is_file():
            state = load_checkpoint(path)
            if isinstance(state.get("config"), dict):
                return config_from_dict(state["config"], source=str(path))
    raise BadInput(f"--latency times the network and needs --config CFG for its heads (there is no single-task "
                   f"model.pt under {runs / 'single'} to take it from), e.g. --config configs/scenes.yaml")


def latency_probe(config: Config, affinity: AffinityData, runs: str | os.PathLike, device: str = "cpu",
                  batch: int = 1, repeats: int | None = None, warmup: int | None = None,
                  refresh: bool = False) -> LatencyProbe:
    """The latency table of ``affinity``'s tasks, stages and backbone on ``device`` at ``batch``.

    Measured once (the all-shared network of the config's heads, random weights; every
    stage and head timed round robin, median after warm-up) and cached at
    :func:`branchnet.runs.latency_cache_path` under ``runs``; a cached table is reused only
    when it was measured for the same encoder and heads, input size, device, batch, torch
    version and CPU thread count (``refresh`` measures again). The backbone and input size
    are the affinity file's when it records them, else the config's.

    Raises :class:`BadInput` for no CUDA with ``cuda``, a batch below 1, or a task the
    config lacks.
    """
    import dataclasses
    import json

    import torch

    from branchnet.atomic import atomic_write_json
    from branchnet.deploy.profile import REPEATS, WARMUP, LatencyTable, device_name, measure_latency_table
    from branchnet.errors import BadInput
    from branchnet.nn.backbones import NUM_STAGES
    from branchnet.nn.branched import BranchedNet
    from branchnet.runs import latency_cache_path
    from branchnet.steps.profile import tasks_of
    from branchnet.tree import shared_partitions
    from branchnet.devices import resolve_device

    dev = resolve_device(device, "--profile-device")
    if int(batch) < 1:
        raise BadInput(f"--batch {batch} must be at least 1 (the batch size the latency is measured at)")
    repeats = REPEATS if repeats is None else int(repeats)
    warmup = WARMUP if warmup is None else int(warmup)
    tasks = tasks_of(config, affinity.tasks, "the affinity file")
    model = config.model
    if affinity.backbone and affinity.backbone != model.backbone:
        model = dataclasses.replace(model, backbone=affinity.backbone)
    size = tuple(int(v) for v in affinity.input_size) if affinity.input_size is not None else config.image_size
    name = device_name(dev)
    path = latency_cache_path(runs, name, batch, size)
    key = json.loads(json.dumps({"model": dataclasses.asdict(model), "tasks": [t.describe() for t in tasks],
                                 "input_size": list(size), "device": name, "batch": int(batch),
                                 "torch": torch.__version__,
                                 "threads": torch.get_num_threads() if dev.type == "cpu" else None}))
    if path.is_file() and not refresh:
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("format") == LATENCY_FORMAT and cached.get("key") == key:
                return LatencyProbe(LatencyTable.from_json(cached["table"]), path, True, tasks, model, dev,
                                    repeats, warmup, config.seed)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass  # unreadable or foreign: measure again and replace it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = BranchedNet(tasks, shared_partitions(list(affinity.tasks), NUM_STAGES), model, size)
    table = measure_latency_table(net, dev, int(batch), repeats, warmup)
    atomic_write_json(path, {"format": LATENCY_FORMAT, "key": key, "table": table.to_json()})
    return LatencyProbe(table, path, False, tasks, model, dev, repeats, warmup, config.seed)


LATENCY_FORMAT = "branchnet.latency/1"

"""``branchnet build``: the tree search under a budget (the step is :mod:`branchnet.steps.build`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import OutOption, QuietOption, app
from branchnet.moved import moved_attribute


def _parse_costs(text: str | None, what: str) -> list[float] | None:
    """``"1,2.5M,3K"`` -> [1.0, 2.5e6, 3e3]; each entry a count with an optional K/M/G/T suffix (0 allowed)."""
    if text is None:
        return None
    from branchnet.errors import BadInput
    from branchnet.units import parse_budget

    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise BadInput(f"{what} '{text}' has an empty entry; give comma-separated counts like 1.2M,7.1M")
        try:
            values.append(0.0 if float(item) == 0 else parse_budget(item, what))
        except ValueError:
            values.append(parse_budget(item, what))
    return values


def _backbone_costs(data, config: Path | None, backbone: str | None, input_size: tuple[int, int] | None):
    """(affinity data relabelled with the backbone and size, costs, the loaded config) for
    --backbone/--input-size/--config: the config is read here, once, for every use of it."""
    import dataclasses

    from branchnet.config import load_config
    from branchnet.errors import BadInput
    from branchnet.steps.build import costs_from_backbone

    if config is None:
        raise BadInput("--backbone/--input-size need --config CFG for the task heads (e.g. --config configs/scenes.yaml)")
    cfg = load_config(config)
    costs = costs_from_backbone(cfg, data.tasks, backbone, input_size)
    data = dataclasses.replace(data, backbone=backbone or cfg.model.backbone,
                               input_size=tuple(input_size) if input_size else cfg.image_size)
    return data, costs, cfg


@app.command("build")
def build(
    affinity: Annotated[Path, typer.Option("--affinity", "-a", help="Affinity file (affinity.npz) from `branchnet affinity`.")],
    params: Annotated[Optional[str], typer.Option("--params", "-p", help="Params budget of the whole network, e.g. 120M.")] = None,
    flops: Annotated[Optional[str], typer.Option("--flops", help="FLOPs budget per image, e.g. 40G (needs FLOPs in the affinity file).")] = None,
    out: OutOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print tree.json on stdout and nothing else there.")] = False,
    sweep: Annotated[bool, typer.Option("--sweep", help="List every optimal tree from all-shared to all-separate, with a plot.")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="Force the exact search (default: exact up to 10 tasks).")] = False,
    stage_params: Annotated[Optional[str], typer.Option("--stage-params", help="Params of each stage, comma-separated (overrides the affinity file).")] = None,
    head_params: Annotated[Optional[str], typer.Option("--head-params", help="Params of each task head, comma-separated.")] = None,
    stage_flops: Annotated[Optional[str], typer.Option("--stage-flops", help="FLOPs of each stage, comma-separated.")] = None,
    head_flops: Annotated[Optional[str], typer.Option("--head-flops", help="FLOPs of each task head, comma-separated.")] = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="Cost the stages of this timm backbone (with --config's heads) instead of the affinity file's costs.")] = None,
    input_size: Annotated[Optional[tuple[int, int]], typer.Option("--input-size", help="H W at which --backbone's FLOPs are counted (default: the config's image size).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Config whose task heads (and default backbone/size) cost the tree with --backbone.")] = None,
    cost: Annotated[str, typer.Option("--cost", help="How a tree's groups add up: max (the paper's: mean over groups of the worst pair), mean (mean pair), weighted (size-weighted mean of the worst pair), sensitivity (max, pairs weighed by each task's loss in the all-shared network), learned (minus the Δ_MTL a fitted model predicts; needs --model).")] = "max",
    shared_metrics: Annotated[Optional[Path], typer.Option("--shared-metrics", help="metrics.json of the all-shared network for --cost sensitivity (default: branched/shared/metrics.json beside the affinity file).")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="The fitted model of --cost learned: RUNS/search/model.json from `branchnet search`.")] = None,
    window: Annotated[bool, typer.Option("--window", help="The tree must have at least 0.9 of --params (the budget window [0.9 B, B], as `branchnet search` recommends and `evaluate` compares).")] = False,
    random: Annotated[Optional[int], typer.Option("--random", help="List K random trees of the budget window [0.9 B, B] of --params (uniform over trees; no tree.json).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --random.")] = 0,
    exhaustive: Annotated[bool, typer.Option("--exhaustive", help="List every tree (in the budget window of --params when given; no tree.json).")] = False,
    branch_stages: Annotated[Optional[int], typer.Option("--branch-stages", help="With --exhaustive/--random: only trees that branch in the last L stages (the paper's Fig. 5: 3).")] = None,
    latency: Annotated[Optional[str], typer.Option("--latency", help="Latency budget per batch, e.g. 12ms, 0.5s, 800us: stage and head latencies measured on --profile-device, summed over the tree's nodes.")] = None,
    profile_device: Annotated[Optional[str], typer.Option("--profile-device", help="Where --latency is measured: cpu (default), cuda or cuda:N.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Batch size --latency is measured at (default 1).")] = None,
    quiet: QuietOption = False,
) -> None:
    """Search the branched tree of least task dissimilarity under a budget; write tree.json.

    The tree (groups per stage) is printed with its params, FLOPs and dissimilarity and
    the cost of the all-shared and all-separate networks. tree.json goes beside the
    affinity file unless --out says otherwise; --sweep also writes sweep.png there.
    --random K / --exhaustive list a population of trees instead (--json: a JSON list of
    tree.json objects; --out FILE writes that list).
    --latency 12ms adds a latency budget: each stage's and head's latency is measured once
    on --profile-device at --batch (cached under the run directory's latency/), summed over
    the tree's nodes like FLOPs, and the chosen tree's real latency is measured and printed
    beside that prediction (heads from --config, else from the run's single-task models).
    """
    import json

    from branchnet.affinity import load_affinity
    from branchnet.steps.build import build_tree
    from branchnet.errors import BadInput
    from branchnet.units import parse_budget

    if latency is None and (profile_device is not None or batch is not None):
        raise BadInput("--profile-device and --batch say where and how --latency is measured; add a latency budget "
                       "such as --latency 12ms")
    if random is not None or exhaustive:
        if latency is not None:
            raise BadInput("--latency budgets the search; it does not combine with --random or --exhaustive")
        if window:
            raise BadInput("--window restricts the search; --random trees already come from the window, and "
                           "--exhaustive lists the window's trees of --params")
        return _population(affinity, params, random, seed, exhaustive, branch_stages, sweep, cost, shared_metrics,
                           out, json_out, quiet, _cost_arrays(stage_params, head_params, stage_flops, head_flops),
                           backbone, input_size, config, model)
    if branch_stages is not None:
        raise BadInput("--branch-stages restricts --exhaustive or --random; add one of them")
    if params is None and latency is None and not sweep:
        raise BadInput("give a params budget with --params (e.g. --params 120M), or --sweep to see every budget")
    from branchnet.units import parse_latency

    latency_budget = parse_latency(latency, "--latency") if latency is not None else None
    data = load_affinity(affinity)
    budget = parse_budget(params, "params budget") if params is not None else None
    flops_budget = parse_budget(flops, "FLOPs budget") if flops is not None else None
    costs, cfg = {}, None
    if backbone is not None or input_size is not None or config is not None:
        data, costs, cfg = _backbone_costs(data, config, backbone, input_size)
    costs.update({k: v for k, v in dict(stage_params=_parse_costs(stage_params, "--stage-params"),
                 head_params=_parse_costs(head_params, "--head-params"),
                 stage_flops=_parse_costs(stage_flops, "--stage-flops"),
                 head_flops=_parse_costs(head_flops, "--head-flops")).items() if v is not None})
    from branchnet.steps.build import group_cost_for

    group_cost = group_cost_for(cost, data, shared_metrics, affinity, model)
    probe = None
    if latency_budget is not None:
        from branchnet.steps.build import config_for_latency, latency_probe

        probe = latency_probe(config_for_latency(cfg, data, affinity), data, Path(affinity).parent, profile_device or "cpu", 1 if batch is None else batch)
        if not quiet:
            from branchnet.progress import say

            say(f"{'read the cached' if probe.cached else 'measured the'} stage and head latencies: {probe.cache}")
    report = build_tree(data, budget, flops_budget, method="exact" if exact else "auto", sweep=sweep,
                        costs=costs, out=out, affinity_path=affinity, cost=group_cost,
                        latency_budget=latency_budget, latency=probe, window=window)
    if json_out:
        payload: object
        if report.tree is not None and report.sweep is None:
            payload = report.tree.to_json()
        elif report.tree is None:
            payload = [t.to_json() for t in report.sweep or []]
        else:
            payload = {"tree": report.tree.to_json(), "sweep": [t.to_json() for t in report.sweep or []]}
        typer.echo(json.dumps(payload, indent=2, allow_nan=False))
    else:
        report.print()
        if probe is not None:
            for line in latency_lines(report, probe):
                typer.echo(line)
    if not quiet:
        from branchnet.progress import say

        for path in report.written:
            say(f"wrote {path}")


def latency_lines(report, probe) -> list[str]:
    """What ``build --latency`` adds to the report: the model's prediction against the measurement."""
    from branchnet.units import format_latency

    table = probe.table
    where = (f"{table.device_type} ({table.device}), batch {table.batch}, {table.input_size[0]}x{table.input_size[1]}"
             f"{', cached table' if probe.cached else ''}")
    lines = [f"latency model (sum of measured node and head latencies on {where}): all-shared "
             f"{format_latency(table.predict(report.shared.partitions))}, all-separate "
             f"{format_latency(table.predict(report.separate.partitions))}"]
    info = report.tree.extra.get("latency", {}) if report.tree is not None else {}
    if "measured_s" in info:
        budget = f" (budget {format_latency(info['budget_s'])})" if info.get("budget_s") else ""
        lines.append(f"latency of the tree: predicted {format_latency(info['predicted_s'])}{budget}; measured "
                     f"{format_latency(info['measured_s'])} end to end (spread {format_latency(info['measured_spread_s'])}), "
                     f"the model is off by {100 * info['model_error']:+.0f}%; its parts measured now sum to "
                     f"{format_latency(info['parts_now_s'])}")
    return lines


def _cost_arrays(stage_params: str | None, head_params: str | None, stage_flops: str | None,
                 head_flops: str | None) -> dict[str, list[float]]:
    return {k: v for k, v in dict(stage_params=_parse_costs(stage_params, "--stage-params"),
            head_params=_parse_costs(head_params, "--head-params"),
            stage_flops=_parse_costs(stage_flops, "--stage-flops"),
            head_flops=_parse_costs(head_flops, "--head-flops")).items() if v is not None}


def _population(affinity: Path, params: str | None, random: int | None, seed: int, exhaustive: bool,
                branch_stages: int | None, sweep: bool, cost: str, shared_metrics: Path | None, out: Path | None,
                json_out: bool, quiet: bool, explicit: dict, backbone: str | None,
                input_size: tuple[int, int] | None, config: Path | None, model: Path | None = None) -> None:
    """``build --random K`` / ``build --exhaustive``: print (and with --out write) a population."""
    import json
    import sys

    from branchnet.affinity import load_affinity
    from branchnet.errors import BadInput
    from branchnet.steps.build import group_cost_for, list_trees
    from branchnet.tree.report import population_table
    from branchnet.units import format_count, parse_budget

    if random is not None and exhaustive:
        raise BadInput("give one of --random K (random trees of a budget window) or --exhaustive (every tree)")
    if sweep:
        raise BadInput("--sweep lists the optimal trees; it does not combine with --random or --exhaustive")
    data = load_affinity(affinity)
    budget = parse_budget(params, "params budget") if params is not None else None
    costs: dict = {}
    if backbone is not None or input_size is not None or config is not None:
        data, costs, _ = _backbone_costs(data, config, backbone, input_size)
    costs.update(explicit)
    group_cost = group_cost_for(cost, data, shared_metrics, affinity, model)
    population = list_trees(data, budget, random=random, seed=seed, exhaustive=exhaustive,
                            branch_stages=branch_stages, costs=costs, cost=group_cost, out=out)
    window = ""
    if population.window is not None:
        window = f" with params in [{format_count(population.window[0])}, {format_count(population.window[1])}]"
    if random is not None and population.took_all and not quiet:
        print(f"branchnet: note: the budget window{window} holds only {population.total} trees (besides the "
              f"all-shared and all-separate ones), not the {random} asked for: listing all of them", file=sys.stderr)
    if json_out:
        typer.echo(json.dumps([t.to_json() for t in population.trees], indent=2, allow_nan=False))
    else:
        from rich.console import Console

        kind = "random trees" if random is not None else "trees"
        title = f"{len(population.trees)} {kind} of {population.total}{window}"
        Console(highlight=False).print(population_table(population.trees, title))
    if out is not None and not quiet:
        from branchnet.progress import say

        say(f"wrote {out}")


#: Names that moved in 0.3.0 (docs/architecture.md, "Moved modules").
_MOVED = {"export": "branchnet.cli.export"}


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)

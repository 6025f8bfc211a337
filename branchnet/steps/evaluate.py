"""``branchnet evaluate``: is the affinity's tree any good on this data? (docs/evaluate.md)

Three parts, each in its own place:

1. **The study** (what to train, no torch): :func:`prepare_study` checks the run (its
   single-task baselines, its affinity files, the evaluate directory's settings), and
   :func:`branchnet.study.jobs.plan_study` lists the trees (per budget the tree of each
   measure and cost, random trees of the window or every tree, once all-shared and
   all-separate), their roles and the jobs (every tree with every evaluation seed).
2. **Training** (:func:`train_study_network`): one network of the run store per job,
   ``<runs>/evaluate/nets/<tree id>/seed<s>/``, through :func:`branchnet.runs.plan_network`
   (reuse, train, resume), :func:`~branchnet.train.engine.fit` and
   :func:`branchnet.steps.commit.commit_network`; evaluation seed s trains with the config's seed
   plus s (:func:`branchnet.runs.evaluation_config`) and its Δ_MTL is against the run's
   single-task models (:func:`branchnet.runs.find_baselines` with the run's settings).
3. **Reporting** (rank 0, from the trained networks' metrics alone): ``trees.csv``
   (:mod:`branchnet.study.table`), ``summary.json``/``summary.md``
   (:mod:`branchnet.study.summary`), ``pareto.png`` (:mod:`branchnet.study.plot`).

Under ``torchrun`` the jobs are independent: rank 0 plans and broadcasts the list of the
networks still to train, the ranks leave the process group, and rank r trains jobs
r, r + W, r + 2W, ... of that list alone on its own device (no DistributedDataParallel, no
collective inside a job); rank 0 then waits until every network of the list is committed
in the run store and writes the report. A network's numbers do not depend on which rank
trained it, so the result equals a serial run. With ``--jobs N`` each rank trains its share N
at a time, in worker processes (:mod:`branchnet.steps.jobs`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from branchnet.config import Config
from branchnet.errors import BadInput, unknown_choice
from branchnet.progress import say
from branchnet.runs import (CHECKPOINT_FILE, EVALUATE_DIR, PARETO_FILE, RECORD_FILE, STUDY_NETS_DIR,
                            STUDY_SETTINGS_FILE, SUMMARY_JSON, SUMMARY_MD, TREES_FILE, Baselines, Plan,
                            affinity_path, check_unlocked, evaluate_dir, find_baselines, first_difference,
                            json_safe, plan_network, read_json, read_metrics, read_record, study_network_dir,
                            study_settings)
from branchnet.steps.affinity import MEASURES
from branchnet.steps.jobs import JobClock, JobSlots, Pool, duration, fit_slots, plan_slots
from branchnet.steps.tree_networks import SplitCache, train_tree_network, tree_network_fingerprint
from branchnet.study.jobs import Costs, Job, Scorer, StudyPlan, StudyTree, plan_study, scorers_for, sweep_budgets
from branchnet import distributed as dist_utils
from branchnet.units import MAX_NETWORKS, check_int, format_count, parse_budget

#: Measures ``--measures`` knows by name (each read from ``runs.affinity_path(runs, name)``): the registry's.
KNOWN_MEASURES = MEASURES.names
#: Budgets when neither ``--budgets`` nor ``--sweep`` is given.
DEFAULT_SWEEP = 3
#: Random trees per budget when ``--random`` is not given.
DEFAULT_RANDOM = 8
#: Seconds between two looks at the run store while rank 0 waits for the other ranks.
POLL_SECONDS = 2.0


# ---------------------------------------------------------------------------------
# 1. The study


@dataclass
class Study:
    """A checked, planned study: the plan, the baselines, and a reuse plan per job."""

    config: Config
    runs: Path
    plan: StudyPlan
    baselines: Baselines
    jobs: list[Job]
    network_plans: dict[Job, Plan]
    notes: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[Job]:
        """The jobs still to train (or resume), in plan order."""
        return [j for j in self.jobs if self.network_plans[j].action != "reuse"]


def parse_measures(spec: str | Sequence[str], runs: Path) -> dict[str, Path]:
    """``"rsa,fafs"`` or ``["rsa", "mine=path/to/affinity.npz"]`` -> ``{name: affinity file}``.

    A bare name is one of :data:`KNOWN_MEASURES`, read from the run's affinity file
    (:func:`branchnet.runs.affinity_path`); ``NAME=PATH`` evaluates any affinity file under
    the name NAME (e.g. one of epoch 2: ``rsa-e2=runs/x/affinity-epoch2.npz``), or a learned
    model (a search directory or its model.json: ``learned=runs/x/search``).
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if not items:
        raise BadInput("--measures is empty; give e.g. --measures rsa,fafs")
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if sep:
            if not path.strip():
                raise BadInput(f"--measures '{item}': give NAME=PATH with the affinity file after '='")
            where = Path(path.strip())
        elif name in KNOWN_MEASURES:
            where = affinity_path(runs, name)
        else:
            raise unknown_choice("measure (or give NAME=PATH of an affinity file)", name, KNOWN_MEASURES)
        if name in out:
            raise BadInput(f"--measures names '{name}' twice; give each measure once")
        out[name] = where
    return out


def _load_measure(name: str, path: Path, config: Config, runs: Path, baselines: Baselines):
    from branchnet.affinity import load_affinity
    from branchnet.nn import NUM_STAGES
    from branchnet.study.jobs import align_affinity

    if not path.is_file():
        how = f"`branchnet affinity --config {config.source} --runs {runs}" + \
              (f" --measure {name}`" if name != "rsa" else "`")
        hint = f"run {how} first" if name in KNOWN_MEASURES else "give the path of an affinity file"
        raise BadInput(f"no {name.upper() if name in KNOWN_MEASURES else name} affinity at {path}; {hint}")
    data = load_affinity(path)
    record = read_json(path.with_suffix(".json"))
    models = record.get("settings", record).get("models") if isinstance(record, dict) else None
    if isinstance(models, dict) and models and models != baselines.records:
        raise BadInput(f"{path} was measured from other single-task models than those in {baselines.source} "
                       f"(they were retrained since); measure it again (`branchnet affinity --config "
                       f"{config.source} --runs {runs}" + (f" --measure {name}" if name != "rsa" else "") + "`)")
    return align_affinity(data, config.task_names, NUM_STAGES, str(path))


def is_learned_measure(path: Path) -> bool:
    """Whether a ``--measures NAME=PATH`` names a learned model (a search directory or its
    model.json) rather than an affinity file (an ``.npz``)."""
    return path.is_dir() or path.suffix.lower() != ".npz"


def _load_learned(name: str, path: Path, config: Config, baselines: Baselines, seeds: int) -> Scorer:
    """The scorer of a learned model (``branchnet search``'s model.json): its tree of budget B is
    the window's tree of best predicted Δ_MTL. :class:`BadInput` when the model is of other
    tasks, was fitted against other single-task baselines, or on a seed this study judges on."""
    from branchnet.affinity import AffinityData
    from branchnet.learned import load_model
    from branchnet.nn import NUM_STAGES
    from branchnet.runs import SEARCH_SEED_OFFSET
    from branchnet.tree.group_cost import learned_cost

    model = load_model(path)
    tasks = config.task_names
    if sorted(model.tasks) != sorted(tasks):
        raise BadInput(f"{path} is a learned model of tasks {', '.join(model.tasks)} but the config has "
                       f"{', '.join(tasks)}; fit one on this run (`branchnet search --config {config.source}`)")
    if len(model.locations) != NUM_STAGES:
        raise BadInput(f"{path} is a learned model of {len(model.locations)} stages but the networks have "
                       f"{NUM_STAGES}; fit one on this backbone")
    record = read_json(path / "model.json" if path.is_dir() else path) or {}
    fitted_on = ((record.get("search") or {}).get("baselines") or {}).get("model_sha256")
    if isinstance(fitted_on, dict) and fitted_on and fitted_on != baselines.records:
        raise BadInput(f"{path} was fitted against other single-task models than those in {baselines.source} "
                       f"(they were retrained since); run `branchnet search --config {config.source}` again")
    peeked = sorted({o.seed for o in model.observations} & set(range(int(seeds))))
    if peeked:
        raise BadInput(f"the learned model {path} was fitted on networks of seed(s) {', '.join(map(str, peeked))}, "
                       f"which this study judges on; judge it on seeds the search never used (the search trains "
                       f"with seeds {SEARCH_SEED_OFFSET} and up)")
    order = [model.tasks.index(t) for t in tasks]
    pairs = model.pair_costs()[:, order][:, :, order]
    n, d = len(tasks), len(model.locations)
    stub = AffinityData(affinity=np.broadcast_to(np.eye(n), (d, n, n)).copy(), tasks=list(tasks),
                        locations=list(model.locations), measure="learned")
    return Scorer(name, learned_cost(pairs), stub, window=True)


def costs_from_baselines(baselines: Baselines, tasks: Sequence[str]) -> Costs:
    """Stage and head params/FLOPs of the run's networks, from the single-task models'
    metrics.json (every model has the same stages; each task its head)."""
    first = baselines.metrics[tasks[0]]
    try:
        stage_params = np.asarray(first["stage_params"], dtype=np.float64)
        head_params = np.asarray([baselines.metrics[t]["head_params"][t] for t in tasks], dtype=np.float64)
    except (KeyError, TypeError):
        raise BadInput(f"the single-task metrics in {baselines.source} hold no stage_params/head_params; "
                       "retrain them with this branchnet (`branchnet train-single --force`)") from None
    stage_flops = first.get("stage_flops")
    head = [(baselines.metrics[t].get("head_flops") or {}).get(t) for t in tasks]
    flops = stage_flops is not None and all(h is not None for h in head)
    return Costs(stage_params, head_params, np.asarray(stage_flops, dtype=np.float64) if flops else None,
                 np.asarray(head, dtype=np.float64) if flops else None)


def _group_costs(names: Sequence[str], config: Config, runs: Path, baselines: Baselines, tasks: list,
                 own_study: bool = True):
    """The :class:`GroupCost` of each ``--costs`` name; ``sensitivity`` weighs tasks by their
    per-task test Δ in the study's all-shared network of seed 0 (when ``own_study`` and it is
    trained), else in ``<runs>/branched/shared`` (as ``build --cost sensitivity``)."""
    from branchnet.tree.group_cost import COSTS, GroupCost, sensitivity_cost, shared_per_task_delta

    out = []
    for name in names:
        if name not in COSTS:
            raise unknown_choice("cost", name, COSTS)
        if name != "sensitivity":
            out.append(GroupCost(name))
            continue
        own = study_network_dir(runs, "shared", 0)
        if own_study and read_record(own)[0] is not None:
            from branchnet.tasks import multi_task_delta

            metrics = read_metrics(own, "evaluate/nets/shared/seed0", "rerun `branchnet evaluate`")
            per_task = multi_task_delta(metrics["test"], {t: b["test"][t] for t, b in baselines.metrics.items()},
                                        tasks)["per_task"]
        else:
            shared = runs / "branched" / "shared" / "metrics.json"
            metrics = read_json(shared)
            if not isinstance(metrics, dict):
                raise BadInput("--costs sensitivity weighs tasks by what they lose in the all-shared network, and "
                               f"neither {own} nor {shared} holds it; run `branchnet evaluate` without "
                               "sensitivity first (it trains the all-shared network) or `branchnet train --tree shared`")
            per_task = shared_per_task_delta(metrics, str(shared))
        out.append(sensitivity_cost(per_task, config.task_names))
    if len({c.name for c in out}) != len(out):
        raise BadInput("--costs names a cost twice; give each once")
    return out


def check_settings(config: Config, runs: Path, force: bool) -> str | None:
    """The first difference between ``<runs>/evaluate/settings.json`` and this config's study
    settings (None when they agree or there is no such file); :class:`BadInput` naming it
    unless ``force``."""
    path = evaluate_dir(runs) / STUDY_SETTINGS_FILE
    old = read_json(path)
    if old is None:
        if path.exists() and not force:
            raise BadInput(f"{path} is not readable; pass --force to start the evaluation over")
        return None
    difference = first_difference(old, study_settings(config))
    if difference is not None and not force:
        raise BadInput(f"{evaluate_dir(runs)} was made with other settings ({difference}); pass --force to start "
                       "the evaluation over, or use another --runs")
    return difference


def prepare_study(config: Config, runs: str | os.PathLike, *, budgets: str | Sequence[Any] | None = None,
                  sweep: int | None = None, random: int | None = None, seeds: int = 3,
                  measures: str | Sequence[str] = ("rsa", "fafs"), exhaustive: bool = False,
                  branch_stages: int | None = None, costs: str | Sequence[str] = ("max",),
                  resume: bool = False, force: bool = False) -> Study:
    """Check everything and plan the study; nothing is written. :class:`BadInput` (one line)
    for bad options, a run without single-task models or affinity files, a budget outside
    [all-shared, all-separate], a window holding no tree, too many trees for ``exhaustive``,
    an evaluate directory made with other settings (unless ``force``) and a network of the
    study trained with other settings (unless ``force``)."""
    from branchnet.data import build_tasks

    runs = Path(runs)
    if budgets is not None and sweep is not None:
        raise BadInput("give --budgets B1,B2,... or --sweep K, not both")
    check_int(seeds, "--seeds", 1, MAX_NETWORKS, " seeds to train every tree with (e.g. --seeds 3)")
    if random is not None:
        check_int(random, "--random", 1, MAX_NETWORKS, " random trees per budget (e.g. --random 8)")
    tasks = build_tasks(config)
    names = [t.name for t in tasks]
    if len(names) < 2:
        raise BadInput(f"the config has one task ({names[0]}); a study of trees needs at least two")
    found = find_baselines(config, runs, names, purpose="a Δ_MTL against it")
    cost_names = [c.strip() for c in (costs.split(",") if isinstance(costs, str) else costs) if c and c.strip()]
    if not cost_names:
        raise BadInput("--costs is empty; give e.g. --costs max (the paper's) or max,mean,weighted,sensitivity")
    paths = parse_measures(measures, runs)
    affinities = {name: _load_measure(name, path, config, runs, found)
                  for name, path in paths.items() if not is_learned_measure(path)}
    learned = [_load_learned(name, path, config, found, seeds) for name, path in paths.items()
               if is_learned_measure(path)]
    group_costs = _group_costs(cost_names, config, runs, found, tasks, own_study=not force)
    check_settings(config, runs, force)
    cost_arrays = costs_from_baselines(found, names)
    from branchnet.nn import NUM_STAGES
    from branchnet.tree import separate_partitions, shared_partitions
    from branchnet.tree.costs import tree_params

    low = float(tree_params(shared_partitions(names, NUM_STAGES), names, cost_arrays.stage_params,
                            cost_arrays.head_params))
    high = float(tree_params(separate_partitions(names, NUM_STAGES), names, cost_arrays.stage_params,
                             cost_arrays.head_params))
    if budgets is None:
        from branchnet.tree.sampling import budgets_with_trees

        values, moved = budgets_with_trees(names, cost_arrays.stage_params, cost_arrays.head_params,
                                           sweep_budgets(low, high, DEFAULT_SWEEP if sweep is None else int(sweep)))
    else:
        items = budgets.split(",") if isinstance(budgets, str) else list(budgets)
        values = [parse_budget(str(b).strip(), "--budgets") for b in items if str(b).strip()]
        moved = []
    if random is None and not exhaustive:
        random = DEFAULT_RANDOM
    locations = next(iter(affinities.values())).locations if affinities else learned[0].affinity.locations
    plan = plan_study(names, locations, cost_arrays, scorers_for(affinities, group_costs) + learned, values, seeds,
                      random, exhaustive, branch_stages, sample_seed=config.seed)
    jobs = plan.jobs()
    network_plans = {}
    start_over = force and evaluate_dir(runs).exists()
    for job in jobs:
        tree = plan.trees[job.tree_id]
        fp = tree_network_fingerprint(config, tree.partitions, found, job.seed)
        directory = study_network_dir(runs, job.tree_id, job.seed)
        if start_over:
            network_plans[job] = Plan(directory, "train", fp)
        else:
            network_plans[job] = plan_network(directory, fp, f"evaluate/nets/{job.tree_id}/seed{job.seed}",
                                              resume=resume, hint="pass --force to start the evaluation over")
    _check_before_writing(config, runs, network_plans.values())
    return Study(config, runs, plan, found, jobs, network_plans, moved + list(plan.notes))


def _check_before_writing(config: Config, runs: Path, plans: Iterable[Plan]) -> None:
    """What would otherwise fail after the first write: a network of the study that another
    running process is training (:func:`branchnet.runs.check_unlocked`: a second ``evaluate`` on
    the run refuses, naming the holder), and a checkpoint ``--resume`` cannot continue."""
    from branchnet.train.checkpoint import check_resumable

    check_unlocked(evaluate_dir(runs) / STUDY_NETS_DIR, f"{EVALUATE_DIR}/{STUDY_NETS_DIR}")
    for plan in plans:
        if plan.action == "resume":
            check_resumable(plan.directory / CHECKPOINT_FILE, plan.fingerprint, config.train.epochs)


# ---------------------------------------------------------------------------------
# 2. Training


def tree_info(study: Study, tree: StudyTree) -> dict[str, Any]:
    """The tree entry of a study network's metrics.json and model.pt."""
    roles = [{"source": r.source, "budget": r.budget} for r in study.plan.roles if r.tree_id == tree.tree_id]
    return {"kind": "study", "roles": roles,
            **tree.tree_json(study.plan.tasks, study.plan.locations, study.config.model.backbone)}


def train_study_network(study: Study, job: Job, *, datasets: SplitCache | None = None, quiet: bool = False,
                        label: str | None = None) -> dict[str, Any]:
    """Train (or resume) the network of ``job`` and commit it to the run store; returns its
    metrics.json (:func:`branchnet.steps.tree_networks.train_tree_network`: the branched
    network of the job's tree trained with seed + s, its Δ_MTL against the run's baselines)."""
    tree = study.plan.trees[job.tree_id]
    return train_tree_network(study.config, study.baselines, tree.partitions, job.seed, study.network_plans[job],
                              tree_info(study, tree), name=f"{job.tree_id}/seed{job.seed}", datasets=datasets,
                              quiet=quiet, label=label or f"evaluate/{job.tree_id}/seed{job.seed}")


def _roles(study: Study, job: Job) -> str:
    return ", ".join(sorted({r.source + (f"@{format_count(r.budget)}" if r.budget else "")
                             for r in study.plan.roles if r.tree_id == job.tree_id}))


def _train_mine(study: Study, mine: list[Job], *, quiet: bool, rank: int, world: int) -> None:
    """Train this rank's jobs one after the other, saying which of how many and the time left."""
    datasets = SplitCache()
    weights = [study.plan.trees[j.tree_id].flops or study.plan.trees[j.tree_id].params for j in mine]
    clock = JobClock(weights)
    where = f" (rank {rank} of {world})" if world > 1 else ""
    for k, job in enumerate(mine, start=1):
        note = study.network_plans[job].note
        if note and not quiet:
            say(note)
        if not quiet:
            say(f"evaluate: job {k}/{len(mine)}{where}: {job.tree_id} seed {job.seed} ({_roles(study, job)}); "
                f"{duration(clock.left())}")
        started = time.perf_counter()
        train_study_network(study, job, datasets=datasets, quiet=quiet,
                            label=f"evaluate {k}/{len(mine)} {job.tree_id} s{job.seed}")
        clock.finished(time.perf_counter() - started)


#: The splits of the last seed a worker process built (one per worker, :func:`_train_job`).
_WORKER_SPLITS = SplitCache()


def _train_job(study: Study, job: Job) -> float:
    """The pool's job (in a worker process): train ``job``'s network and commit it; returns its
    training seconds."""
    metrics = train_study_network(study, job, datasets=_WORKER_SPLITS, quiet=False,
                                  label=f"{job.tree_id} s{job.seed}")
    return float(metrics.get("train_seconds") or 0.0)


def _train_pool(study: Study, mine: list[Job], slots: JobSlots, *, quiet: bool, rank: int, world: int) -> None:
    """Train this rank's jobs ``slots.jobs`` at a time in worker processes (:mod:`branchnet.steps.jobs`)."""
    slots = fit_slots(slots, len(mine))
    where = f" (rank {rank} of {world})" if world > 1 else ""
    if not quiet:
        for note in slots.notes:
            say(f"evaluate: {note}")
        for job in mine:
            if study.network_plans[job].note:
                say(study.network_plans[job].note)
        say(f"evaluate: {len(mine)} network(s){where}, {slots.jobs} at once, {slots.threads} thread(s) each"
            + (f" on {', '.join(sorted(set(slots.devices)))}" if slots.devices[0] != "cpu" else ""))
    weights = [study.plan.trees[j.tree_id].flops or study.plan.trees[j.tree_id].params for j in mine]
    labels = [f"{j.tree_id} seed {j.seed} ({_roles(study, j)})" for j in mine]
    with Pool(_train_job, study, slots, quiet=quiet) as pool:
        pool.run(mine, labels=labels, weights=weights, title=f"evaluate{where}")


def _wait_for(study: Study, jobs: Sequence[Job], quiet: bool) -> None:
    """Rank 0, after its own jobs: wait until the other ranks have committed theirs."""
    waiting = list(jobs)
    told = -1
    while waiting:
        waiting = [j for j in waiting if not (study.network_plans[j].directory / RECORD_FILE).is_file()]
        if waiting and len(waiting) != told and not quiet:
            say(f"evaluate: waiting for {len(waiting)} network(s) of the other ranks")
            told = len(waiting)
        if waiting:
            time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------------------------
# 3. Reporting


def write_report(study: Study) -> dict[str, Any]:
    """trees.csv, summary.json, summary.md and pareto.png from the committed networks; returns
    the summary. When the report in the evaluate directory is already this one (the same
    trees.csv to the byte, the same study in summary.json, pareto.png there), nothing is
    rewritten (a rerun with every network reused)."""
    from branchnet.atomic import atomic_write_text
    from branchnet.data import build_tasks
    from branchnet.study.table import columns, study_rows, trees_csv_text

    tasks = build_tasks(study.config)
    metrics = {}
    for job in study.jobs:
        label = f"evaluate/nets/{job.tree_id}/seed{job.seed}"
        metrics[job] = read_metrics(study.network_plans[job].directory, label, "rerun `branchnet evaluate`")
    rows = study_rows(study.plan, metrics, tasks, study.baselines.metrics)
    out = evaluate_dir(study.runs)
    text = trees_csv_text(rows, columns(study.plan, tasks))
    context = json.loads(json.dumps(json_safe({
        "config": str(study.config.source), "runs": str(study.runs),
        "budgets_asked": [int(b) for b in study.plan.budgets], "population": study.plan.population,
        "window_sizes": {str(k): v for k, v in study.plan.window_sizes.items()}, "notes": study.notes})))
    current = _current_report(out, text, context)
    if current is not None:
        return current
    from branchnet.study.plot import plot_pareto
    from branchnet.study.summary import summarize, write_summary

    atomic_write_text(out / TREES_FILE, text)
    summary = summarize(rows)
    summary.update(context)
    write_summary(out, summary, title=f"branchnet evaluate: {study.config.name}")
    plot_pareto(rows, summary, out / PARETO_FILE, title=f"{study.config.name}: params against test Δ_MTL")
    return summary


def _current_report(out: Path, text: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the report in ``out`` when it is the report of trees.csv ``text`` and the
    study ``context`` (summary.md and pareto.png there too), else None."""
    try:
        if (out / TREES_FILE).read_text(encoding="utf-8") != text:
            return None
    except (OSError, UnicodeDecodeError):
        return None
    summary = read_json(out / SUMMARY_JSON)
    if not isinstance(summary, dict) or any(summary.get(k) != v for k, v in context.items()):
        return None
    if not (out / SUMMARY_MD).is_file() or not (out / PARETO_FILE).is_file():
        return None
    return summary


# ---------------------------------------------------------------------------------
# The command


def evaluate(config: Config, runs: str | os.PathLike | None = None, *, budgets: str | Sequence[Any] | None = None,
             sweep: int | None = None, random: int | None = None, seeds: int = 3,
             measures: str | Sequence[str] = ("rsa", "fafs"), exhaustive: bool = False,
             branch_stages: int | None = None, costs: str | Sequence[str] = ("max",), resume: bool = False,
             force: bool = False, quiet: bool = False, jobs: str | int | None = 1, per_device: int | None = None,
             curves: bool = False) -> dict[str, Any] | None:
    """``branchnet evaluate``: plan (:func:`prepare_study`), train what is missing, report.

    Returns the summary (None on torchrun ranks other than 0). Under torchrun (the process
    group joined by the CLI), the ranks share the networks to train (see the module
    docstring). ``jobs`` (``--jobs N|auto``) networks train at once on this machine (each
    rank's share under torchrun), ``per_device`` of them on each GPU (:mod:`branchnet.steps.jobs`);
    1 trains in this process. ``curves`` draws every network's curves.png
    (:func:`branchnet.steps.commit.draw_curves`). ``--force`` starts over: the evaluate directory
    is removed once every check has passed, and every network is trained again.
    """
    runs = Path(runs) if runs is not None else config.default_runs_dir()
    slots = plan_slots(jobs, per_device, config.train.device)  # a bad value stops before anything is written
    main = dist_utils.is_main()
    study, error = None, None
    if main:
        try:
            study = prepare_study(config, runs, budgets=budgets, sweep=sweep, random=random, seeds=seeds,
                                  measures=measures, exhaustive=exhaustive, branch_stages=branch_stages,
                                  costs=costs, resume=resume, force=force)
        except BadInput as exc:
            error = str(exc)
    if dist_utils.is_distributed():
        error = dist_utils.broadcast_object(error)
        if error is None:
            study = dist_utils.broadcast_object(study)
    if error is not None:
        raise BadInput(error)
    assert study is not None
    out = evaluate_dir(runs)
    if main:
        from branchnet.atomic import atomic_write_json, ensure_writable_dir

        if force and out.exists():
            shutil.rmtree(out)
            say(f"evaluate: --force: removed {out} to start over")
        ensure_writable_dir(out)
        atomic_write_json(out / STUDY_SETTINGS_FILE, study_settings(config))
        if not quiet:
            for note in study.notes:
                say(f"evaluate: {note}")
            todo = len(study.todo)
            say(f"evaluate: {len(study.plan.trees)} trees x {len(study.plan.seeds)} seed(s) = {len(study.jobs)} "
                f"networks; {len(study.jobs) - todo} already trained, {todo} to train")
    from branchnet.data import prepare_splits

    prepare_splits(config, ("train", "val", "test"))  # rank 0 makes them, the others wait
    rank, world = dist_utils.rank(), dist_utils.world_size()
    if dist_utils.is_distributed():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()  # from here each rank trains whole networks alone
    todo = study.todo
    if slots.jobs > 1 and todo[rank::world]:
        _train_pool(study, todo[rank::world], slots, quiet=quiet, rank=rank, world=world)
    else:
        _train_mine(study, todo[rank::world], quiet=quiet, rank=rank, world=world)
    if rank != 0:
        return None
    _wait_for(study, [j for i, j in enumerate(todo) if i % world != 0], quiet)
    summary = write_report(study)
    if curves:
        from branchnet.steps.commit import draw_curves

        for job in study.jobs:
            draw_curves(study.network_plans[job].directory)
    if not quiet:
        for line in summary["verdict"].values():
            say(f"evaluate: {line}")
        say(f"evaluate: wrote {out / TREES_FILE}, {out / SUMMARY_JSON}, {out / SUMMARY_MD}, {out / PARETO_FILE}")
    return summary

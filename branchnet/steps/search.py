"""``branchnet search``: learn what sharing costs each task from trees the search trains itself.

docs/design.md, "Learned sharing cost"; docs/evaluate.md, "The learned tree". Three parts:

1. **Set-up** (:func:`prepare_search`, nothing written): the run's single-task baselines, the
   affinity files of the prior (RSA, FAFS, TAG, whichever the run has, or ``--measures``), the
   budgets (as ``evaluate``), the search's seeds (:data:`branchnet.runs.SEARCH_SEED_OFFSET` and
   up: never a seed ``evaluate`` judges on), the networks the search directory already holds
   and the proposals it made before, and the directory's settings (another config: exit 2
   naming the first difference, unless ``--force``).
2. **The loop** (:func:`branchnet.learned.loop.run_loop`): propose, train through the run store
   (:func:`branchnet.steps.tree_networks.train_tree_network` into
   ``R/search/nets/<tree id>/seed<s>/``), refit, until ``--networks`` networks. Every round's
   proposals are written to ``proposals.json`` before they train, so a rerun after a crash
   trains what is missing and goes on. Under ``torchrun`` the ranks train the round's
   proposals side by side (rank r the positions r, r + W, ...; rank 0 proposes, waits for them
   in the run store and refits); the proposals depend on ``--batch``, not on the ranks. With
   ``--jobs N`` each rank trains its share of a round N at a time in worker processes
   (:mod:`branchnet.steps.jobs`, one pool kept for every round).
3. **The report** (rank 0): ``trees.csv`` (evaluate's columns), ``model.json`` (the model,
   its coefficients and diagnostics), ``tree-<budget>.json`` per budget (the recommended tree,
   a tree.json), ``predicted.png`` and ``summary.md``.

The model reads each network's *validation* metrics; the test split of these networks is
reported in trees.csv but never fitted, and ``evaluate`` judges the recommended trees on the
test split of networks trained with seeds the search never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from branchnet.affinity import AffinityData
from branchnet.config import Config
from branchnet.errors import BadInput, unknown_choice
from branchnet.learned import ACQUISITIONS, Observation, Proposal, SearchSpace, SharingModel, run_loop
from branchnet.learned.model import MODEL_FILE
from branchnet.progress import say
from branchnet.runs import (CHECKPOINT_FILE, PREDICTED_FILE, PROPOSALS_FILE, RECORD_FILE, SEARCH_DIR,
                            SEARCH_SEED_OFFSET, SEARCH_SETTINGS_FORMAT, STUDY_NETS_DIR, STUDY_SETTINGS_FILE,
                            SUMMARY_MD, TREES_FILE, Baselines, affinity_path, check_unlocked, find_baselines,
                            first_difference, json_safe, plan_network, read_json, read_metrics, read_record,
                            search_dir, search_network_dir, search_tree_path, study_settings)
from branchnet.steps.jobs import Pool, duration, fit_slots, plan_slots
from branchnet.steps.tree_networks import SplitCache, train_tree_network, tree_network_fingerprint
from branchnet.study.jobs import Costs, StudyTree, check_budgets, compact_partitions, sweep_budgets, tree_id
from branchnet import distributed as dist_utils
from branchnet.units import MAX_NETWORKS, check_int, format_count, parse_budget

#: Training seeds of the search when ``--seeds`` is not given (seeds 100 and 101).
DEFAULT_SEEDS = 2
#: ``--networks`` defaults to this many networks per task (the issue's cost goal: 4 N).
NETWORKS_PER_TASK = 4
#: The measures of the prior, read from the run's affinity files when ``--measures`` is not given.
PRIOR_MEASURES = ("rsa", "fafs", "tag")
#: The split whose metrics the model is fitted on.
FIT_SPLIT = "val"
#: Seconds between two looks at the run store while a rank waits for the others.
POLL_SECONDS = 2.0
#: ``round.json``: which round the ranks train now (rank 0 writes it, the others follow).
ROUND_FILE = "round.json"


@dataclass
class SearchSetup:
    """A checked search: everything the loop and the report need, nothing written yet."""

    config: Config
    runs: Path
    baselines: Baselines
    tasks: list[Any]
    costs: Costs
    space: SearchSpace
    budgets: list[int]
    seeds: list[int]
    networks: int
    acquisition: str
    batch: int
    measures: dict[str, AffinityData]
    sources: dict[str, Path]
    settings: dict[str, Any]
    observations: list[Observation] = field(default_factory=list)
    proposals: list[Proposal] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    resume: bool = False
    force: bool = False
    token: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return search_dir(self.runs)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]


# ---------------------------------------------------------------------------------
# 1. Set-up


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def search_settings(config: Config, sources: dict[str, Path], seeds: Sequence[int], acquisition: str) -> dict:
    """What a search directory is made with (``R/search/settings.json``): the study's training
    settings, the prior's affinity files (by SHA-256), the seeds and the acquisition. Budgets,
    ``--networks`` and ``--batch`` may change between calls (the loop goes on)."""
    return json_safe({"format": SEARCH_SETTINGS_FORMAT, "study": study_settings(config),
                      "prior": {name: _file_sha256(path) for name, path in sources.items()},
                      "seeds": [int(s) for s in seeds], "acquisition": acquisition, "split": FIT_SPLIT})


def _measures(spec: str | Sequence[str] | None, config: Config, runs: Path,
              baselines: Baselines) -> tuple[dict[str, AffinityData], dict[str, Path]]:
    from branchnet.steps.evaluate import _load_measure, parse_measures

    if spec is None:
        found = [m for m in PRIOR_MEASURES if affinity_path(runs, m).is_file()]
        if not found:
            raise BadInput(f"no affinity in {runs} for the search's prior; run `branchnet affinity --config "
                           f"{config.source} --runs {runs}` first (and `--measure fafs`, `--measure tag` for more)")
        spec = found
    paths = parse_measures(spec, runs)
    learned = [n for n, p in paths.items() if p.is_dir() or p.name == MODEL_FILE]
    if learned:
        raise BadInput(f"--measures {learned[0]}: a learned model cannot be the prior of a search; give "
                       "affinity files (rsa, fafs, tag or NAME=affinity.npz)")
    return {n: _load_measure(n, p, config, runs, baselines) for n, p in paths.items()}, paths


def _budgets(budgets: str | Sequence[Any] | None, sweep: int | None, space: SearchSpace) -> tuple[list[int], list[str]]:
    """The budgets asked for (as ``evaluate``: a sweep's budget whose window is empty moves to the
    nearest tree size) and the notes of the moves."""
    from branchnet.steps.evaluate import DEFAULT_SWEEP
    from branchnet.tree.sampling import budgets_with_trees

    if budgets is not None and sweep is not None:
        raise BadInput("give --budgets B1,B2,... or --sweep K, not both")
    if budgets is None:
        return budgets_with_trees(space.tasks, space.stage_params, space.head_params,
                                  sweep_budgets(space.low, space.high, DEFAULT_SWEEP if sweep is None else int(sweep)))
    items = budgets.split(",") if isinstance(budgets, str) else list(budgets)
    return check_budgets([parse_budget(str(b).strip(), "--budgets") for b in items if str(b).strip()],
                         space.low, space.high), []


def check_search_settings(directory: Path, settings: dict[str, Any], force: bool) -> None:
    """:class:`BadInput` naming the first difference between ``directory``'s settings.json and
    ``settings`` (unless ``force``)."""
    path = directory / STUDY_SETTINGS_FILE
    old = read_json(path)
    if old is None:
        if path.exists() and not force:
            raise BadInput(f"{path} is not readable; pass --force to start the search over")
        return
    difference = first_difference(old, settings)
    if difference is not None and not force:
        raise BadInput(f"{directory} was made with other settings ({difference}); pass --force to start the search "
                       "over, or use another --runs")


def prepare_search(config: Config, runs: str | os.PathLike, *, budgets: str | Sequence[Any] | None = None,
                   sweep: int | None = None, networks: int | None = None, seeds: int = DEFAULT_SEEDS,
                   measures: str | Sequence[str] | None = None, acquisition: str = "thompson",
                   batch: int | None = None, resume: bool = False, force: bool = False) -> SearchSetup:
    """Check everything and set the search up; nothing is written (see the module docstring).

    :class:`BadInput` (one line) for: ``networks`` below the number of budgets, a budget outside
    [all-shared, all-separate], no single-task models or no affinity for the prior (naming the
    command that makes it), an unknown acquisition, a search directory made with other
    settings (unless ``force``), a network of the search trained with other settings.
    """
    from branchnet.data import build_tasks
    from branchnet.steps.evaluate import costs_from_baselines

    runs = Path(runs)
    if acquisition not in ACQUISITIONS:
        raise unknown_choice("acquisition", acquisition, ACQUISITIONS)
    check_int(seeds, "--seeds", 1, MAX_NETWORKS, " seeds of the search's own (e.g. --seeds 2)")
    if batch is not None:
        check_int(batch, "--batch", 1, MAX_NETWORKS, " networks proposed per round")
    if networks is not None:
        check_int(networks, "--networks", 1, MAX_NETWORKS, " networks to train in all")
    tasks = build_tasks(config)
    names = [t.name for t in tasks]
    if len(names) < 2:
        raise BadInput(f"the config has one task ({names[0]}); a search over trees needs at least two")
    if networks is None:
        networks = NETWORKS_PER_TASK * len(names)
    baselines = find_baselines(config, runs, names, purpose="a Δ_MTL against it")
    affinities, paths = _measures(measures, config, runs, baselines)
    costs = costs_from_baselines(baselines, names)
    locations = next(iter(affinities.values())).locations
    space = SearchSpace(names, locations, costs.stage_params, costs.head_params, costs.stage_flops, costs.head_flops)
    values, notes = _budgets(budgets, sweep, space)
    for b in values:
        space.window_trees(b)  # BadInput when a window holds no tree
    if int(networks) < len(values):
        raise BadInput(f"--networks {networks} is fewer than the {len(values)} budgets; the search needs at least "
                       f"one network per budget (the default is {NETWORKS_PER_TASK} per task: "
                       f"{NETWORKS_PER_TASK * len(names)})")
    seed_list = [SEARCH_SEED_OFFSET + i for i in range(int(seeds))]
    settings = search_settings(config, paths, seed_list, acquisition)
    directory = search_dir(runs)
    check_search_settings(directory, settings, force)
    _check_before_writing(config, directory, resume)
    setup = SearchSetup(config, runs, baselines, tasks, costs, space, values, seed_list, int(networks), acquisition,
                        int(batch) if batch is not None else 1, affinities, paths, settings, resume=resume,
                        force=force, notes=notes)
    if not force:
        _load_state(setup)
    return setup


def _check_before_writing(config: Config, directory: Path, resume: bool) -> None:
    """What would otherwise fail after the first write: a network of the search that another
    running process is training (:func:`branchnet.runs.check_unlocked`: a second ``search`` on
    the run refuses, naming the holder) and, with ``resume``, a checkpoint that cannot be resumed."""
    from branchnet.train.checkpoint import check_resumable

    nets = directory / STUDY_NETS_DIR
    check_unlocked(nets, f"{SEARCH_DIR}/{STUDY_NETS_DIR}")
    if resume and nets.is_dir():
        for path in sorted(nets.glob(f"*/*/{CHECKPOINT_FILE}")):
            check_resumable(path, None, config.train.epochs)


def _load_state(setup: SearchSetup) -> None:
    """The proposals of earlier calls (proposals.json) and every finished network of the search
    directory at the search's seeds, as observations (proposal order, then the others)."""
    log = read_json(setup.directory / PROPOSALS_FILE)
    if isinstance(log, dict) and isinstance(log.get("proposals"), list):
        try:
            setup.proposals = [Proposal.from_json(p) for p in log["proposals"]]
            setup.rounds = [int(p.get("round", 0)) for p in log["proposals"]]
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{setup.directory / PROPOSALS_FILE} is damaged; pass --force to start the search over") \
                from None
    seen: dict[tuple[str, int], Observation] = {}
    for proposal in setup.proposals:
        key = (proposal.tree_id, proposal.seed)
        if key not in seen:
            obs = _finished(setup, proposal.tree_id, proposal.partitions, proposal.seed)
            if obs is not None:
                seen[key] = obs
    nets = setup.directory / STUDY_NETS_DIR
    extra = []
    for seed_dir in sorted(nets.glob("*/seed*")) if nets.is_dir() else []:
        try:
            seed = int(seed_dir.name[4:])
        except ValueError:
            continue
        key = (seed_dir.parent.name, seed)
        if seed not in setup.seeds or key in seen or read_record(seed_dir)[0] is None:
            continue
        metrics = read_metrics(seed_dir, f"search/nets/{key[0]}/seed{seed}", "rerun `branchnet search`")
        partitions = metrics.get("partitions")
        if not isinstance(partitions, list):
            continue
        obs = _finished(setup, key[0], partitions, seed)
        if obs is not None:
            extra.append(obs)
    order = {(p.tree_id, p.seed): i for i, p in reversed(list(enumerate(setup.proposals)))}
    logged = sorted(seen.values(), key=lambda o: order[(o.tree_id, o.seed)])
    setup.observations = extra + logged


def _finished(setup: SearchSetup, tree: str, partitions: Any, seed: int) -> Observation | None:
    """The observation of a finished network of the search (reuse rule applied), else None."""
    directory = search_network_dir(setup.runs, tree, seed)
    plan = plan_network(directory, tree_network_fingerprint(setup.config, partitions, setup.baselines, seed),
                        f"search/nets/{tree}/seed{seed}", hint="pass --force to start the search over")
    if plan.action != "reuse":
        return None
    metrics = read_metrics(directory, f"search/nets/{tree}/seed{seed}", "rerun `branchnet search`")
    return _observation(setup, tree, partitions, seed, metrics, directory)


def _observation(setup: SearchSetup, tree: str, partitions: Any, seed: int, metrics: dict[str, Any],
                 directory: Path) -> Observation:
    from branchnet.tasks import multi_task_delta

    base = {t: b[FIT_SPLIT][t] for t, b in setup.baselines.metrics.items()}
    per_task = multi_task_delta(metrics[FIT_SPLIT], base, setup.tasks)["per_task"]
    return Observation(tree, [[list(g) for g in p] for p in partitions], int(seed), per_task,
                       setup.space.params(partitions), str(directory))


# ---------------------------------------------------------------------------------
# 2. The loop


def _write_proposals(setup: SearchSetup) -> None:
    from branchnet.atomic import atomic_write_json

    entries = [{**p.to_json(), "round": r} for p, r in zip(setup.proposals, setup.rounds)]
    atomic_write_json(setup.directory / PROPOSALS_FILE, {"proposals": entries})


def _write_round(setup: SearchSetup, round_: int, indices: Sequence[int], finished: bool = False) -> None:
    from branchnet.atomic import atomic_write_json

    atomic_write_json(setup.directory / ROUND_FILE, {"token": setup.token, "round": round_,
                                                     "proposals": list(indices), "finished": finished})


def _tree_info(setup: SearchSetup, proposal: Proposal) -> dict[str, Any]:
    tree = StudyTree(proposal.tree_id, proposal.partitions, setup.space.params(proposal.partitions), None)
    info = tree.tree_json(setup.names, setup.space.locations, setup.config.model.backbone)
    return {"kind": "search", "roles": [{"source": f"search:{proposal.acquisition}", "budget": proposal.budget,
                                         "proposal": proposal.index}], **info}


def _train_one(setup: SearchSetup, proposal: Proposal, datasets: SplitCache, quiet: bool, label: str) -> None:
    directory = search_network_dir(setup.runs, proposal.tree_id, proposal.seed)
    fp = tree_network_fingerprint(setup.config, proposal.partitions, setup.baselines, proposal.seed)
    plan = plan_network(directory, fp, f"search/nets/{proposal.tree_id}/seed{proposal.seed}",
                        resume=setup.resume, hint="pass --force to start the search over")
    if plan.action == "reuse":
        return
    if plan.note and not quiet:
        say(plan.note)
    train_tree_network(setup.config, setup.baselines, proposal.partitions, proposal.seed, plan,
                       _tree_info(setup, proposal), name=f"{proposal.tree_id}/seed{proposal.seed}",
                       datasets=datasets, quiet=quiet, label=label)


#: The splits of the last seed a worker process built (one per worker, :func:`_train_job`).
_WORKER_SPLITS = SplitCache()


def _train_job(setup: SearchSetup, proposal: Proposal) -> None:
    """The pool's job (in a worker process): train ``proposal``'s network and commit it."""
    _train_one(setup, proposal, _WORKER_SPLITS, False, f"{proposal.tree_id} s{proposal.seed}")


def _train_share(setup: SearchSetup, share: Sequence[Proposal], pool: Pool | None, datasets: SplitCache,
                 quiet: bool, label: Any, where: str = "") -> None:
    """Train this rank's share of a round: in ``pool`` (``--jobs N``) or one at a time here
    (``label(k, proposal)`` names each)."""
    if pool is None:
        for p in share:
            _train_one(setup, p, datasets, quiet, label(p))
        return
    labels = [f"{p.tree_id} seed {p.seed} (budget {format_count(p.budget)}, {p.acquisition})" for p in share]
    weights = [setup.space.params(p.partitions) for p in share]
    pool.run(list(share), labels=labels, weights=weights, title=f"search{where}")


def _committed(setup: SearchSetup, proposal: Proposal) -> bool:
    return (search_network_dir(setup.runs, proposal.tree_id, proposal.seed) / RECORD_FILE).is_file()


class _Trainer:
    """The loop's ``train``: on rank 0 it records the round, trains its share, waits for the
    other ranks' share in the run store and reads every network's validation metrics."""

    def __init__(self, setup: SearchSetup, world: int, quiet: bool, pool: Pool | None = None) -> None:
        self.setup, self.world, self.quiet, self.pool = setup, world, quiet, pool
        self.datasets = SplitCache()
        self.round = max(setup.rounds, default=-1) + 1
        self.seconds = 0.0
        self.trained = 0

    def __call__(self, proposals: Sequence[Proposal]) -> list[Observation]:
        setup = self.setup
        known = {p.index for p in setup.proposals}
        for p in proposals:
            if p.index not in known:
                setup.proposals.append(p)
                setup.rounds.append(self.round)
        _write_proposals(setup)
        _write_round(setup, self.round, [p.index for p in proposals])
        mine = [(k, p) for k, p in enumerate(proposals) if k % self.world == 0]
        if self.pool is not None and mine:
            if not self.quiet:
                say(f"search: networks {len(setup.observations) + 1}-{len(setup.observations) + len(proposals)}/"
                    f"{setup.networks}: {len(mine)} here, {self.pool.slots.jobs} at once{self._left()}")
            started = time.perf_counter()
            _train_share(setup, [p for _, p in mine], self.pool, self.datasets, self.quiet, None)
            self.seconds += (time.perf_counter() - started) * self.pool.slots.jobs
            self.trained += len(mine)
        for k, p in mine if self.pool is None else []:
            if not self.quiet:
                say(f"search: network {len(setup.observations) + k + 1}/{setup.networks}: {p.tree_id} seed {p.seed} "
                    f"(budget {format_count(p.budget)}, {p.acquisition}){self._left()}")
            started = time.perf_counter()
            _train_one(setup, p, self.datasets, self.quiet, f"search {p.index + 1} {p.tree_id} s{p.seed}")
            self.seconds += time.perf_counter() - started
            self.trained += 1
        _wait(setup, proposals, self.quiet)
        self.round += 1
        out = []
        for p in proposals:
            directory = search_network_dir(setup.runs, p.tree_id, p.seed)
            metrics = read_metrics(directory, f"search/nets/{p.tree_id}/seed{p.seed}", "rerun `branchnet search`")
            out.append(_observation(setup, p.tree_id, p.partitions, p.seed, metrics, directory))
        setup.observations = setup.observations + out
        return out

    def _left(self) -> str:
        """The time left: seconds per network so far (on this rank) times the networks left,
        over the networks trained at once."""
        if self.trained == 0:
            return ""
        at_once = self.world * (self.pool.slots.jobs if self.pool is not None else 1)
        left = self.seconds / self.trained * (self.setup.networks - len(self.setup.observations)) / at_once
        return "; " + duration(left)


def _wait(setup: SearchSetup, proposals: Sequence[Proposal], quiet: bool) -> None:
    waiting = [p for p in proposals if not _committed(setup, p)]
    told = -1
    while waiting:
        if len(waiting) != told and not quiet:
            say(f"search: waiting for {len(waiting)} network(s) of the other ranks")
            told = len(waiting)
        time.sleep(POLL_SECONDS)
        waiting = [p for p in waiting if not _committed(setup, p)]


def _follow(setup: SearchSetup, rank: int, world: int, quiet: bool, pool: Pool | None = None) -> None:
    """Ranks other than 0: train this rank's positions of every round rank 0 publishes (in
    ``pool`` with ``--jobs N``), until it says the loop is finished."""
    datasets = SplitCache()
    handled = -1
    while True:
        state = read_json(setup.directory / ROUND_FILE)
        if isinstance(state, dict) and state.get("token") == setup.token:
            if int(state.get("round", -1)) > handled:
                log = read_json(setup.directory / PROPOSALS_FILE) or {}
                by_index = {int(p["index"]): Proposal.from_json(p) for p in log.get("proposals", [])}
                indices = list(state.get("proposals", []))
                share = [by_index[index] for k, index in enumerate(indices) if k % world == rank and index in by_index]
                _train_share(setup, share, pool, datasets, quiet,
                             lambda p: f"search {p.index + 1} {p.tree_id} s{p.seed} (rank {rank})", f" (rank {rank})")
                handled = int(state["round"])
            if state.get("finished"):
                return
        time.sleep(POLL_SECONDS / 4)


# ---------------------------------------------------------------------------------
# 3. The report


def _prior_model(setup: SearchSetup) -> SharingModel:
    return SharingModel(setup.names, setup.space.locations, {n: a.affinity for n, a in setup.measures.items()},
                        sources={n: str(p) for n, p in setup.sources.items()})


def write_report(setup: SearchSetup, model: SharingModel, recommended: dict[int, Any],
                 overhead: Sequence[float] = ()) -> dict[str, Any]:
    """trees.csv, model.json, tree-<budget>.json, predicted.png and summary.md; returns the record
    written to model.json."""
    from branchnet.atomic import atomic_write_json, atomic_write_text
    from branchnet.learned.diagnostics import leave_one_tree_out, summarize
    from branchnet.learned.report import plot_predicted, summary_markdown
    from branchnet.study.table import header, network_row, write_trees_csv
    from branchnet.tree import save_tree
    from branchnet.tree.costs import make_tree, tree_dissimilarity

    out = setup.directory
    names = setup.names
    d, n = len(setup.space.locations), len(names)
    cost = model.cost()
    columns = [f"dissimilarity_{m}" for m in setup.measures] + ["dissimilarity_learned"]

    def dissimilarity(partitions: Any) -> dict[str, float]:
        values = {f"dissimilarity_{m}": tree_dissimilarity(partitions, names, a.affinity)
                  for m, a in setup.measures.items()}
        values["dissimilarity_learned"] = tree_dissimilarity(partitions, names, np.zeros((d, n, n)), cost)
        return values

    rows, train_seconds = [], 0.0
    budget_of = {(p.tree_id, p.seed): p for p in setup.proposals}
    for obs in model.observations:
        directory = search_network_dir(setup.runs, obs.tree_id, obs.seed)
        metrics = read_metrics(directory, f"search/nets/{obs.tree_id}/seed{obs.seed}", "rerun `branchnet search`")
        proposal = budget_of.get((obs.tree_id, obs.seed))
        tree = StudyTree(obs.tree_id, obs.partitions, setup.space.params(obs.partitions),
                         _flops(setup, obs.partitions))
        source = f"search:{proposal.acquisition}" if proposal is not None else "search:found"
        rows.append(network_row(tree, source, proposal.budget if proposal is not None else None, obs.seed, metrics,
                                setup.tasks, setup.baselines.metrics, dissimilarity(obs.partitions)))
        train_seconds += float(metrics.get("train_seconds") or 0.0)
    write_trees_csv(out / TREES_FILE, rows, header(columns, setup.tasks))

    windows = {b: setup.space.window(b) for b in setup.budgets}
    entries = leave_one_tree_out(model)
    diagnostics = summarize(entries, windows, names)
    recs: dict[str, Any] = {}
    for budget, partitions in recommended.items():
        tid = tree_id(partitions, names)
        mean, sd = model.predict_delta([partitions])
        measured = {str(o.seed): round(o.delta_mtl, 4) for o in model.observations if o.tree_id == tid}
        recs[str(budget)] = {"tree_id": tid, "partitions": partitions, "compact": compact_partitions(partitions),
                             "groups": "-".join(str(len(p)) for p in partitions),
                             "params": setup.space.params(partitions), "predicted": float(mean[0]),
                             "sd": float(sd[0]), "measured": measured, "file": search_tree_path(setup.runs, budget).name}
        tree = make_tree(partitions, names, setup.space.locations, np.zeros((d, n, n)),
                         budget={"params": budget, "flops": None}, backbone=setup.config.model.backbone,
                         method="exact", cost=cost, stage_params=setup.costs.stage_params,
                         head_params=setup.costs.head_params, stage_flops=setup.costs.stage_flops,
                         head_flops=setup.costs.head_flops)
        tree.extra["learned"] = {"predicted_delta_mtl": float(mean[0]), "sd": float(sd[0]),
                                 "window": list(windows[budget]), "model": str(out / MODEL_FILE),
                                 "study_id": tid}
        save_tree(search_tree_path(setup.runs, budget), tree)
    search_info = {"config": str(setup.config.source), "runs": str(setup.runs), "directory": str(out),
                   "budgets": setup.budgets, "windows": {str(b): list(w) for b, w in windows.items()},
                   "networks": setup.networks, "networks_trained": len(model.observations), "seeds": setup.seeds,
                   "acquisition": setup.acquisition, "batch": setup.batch, "split": FIT_SPLIT,
                   "baselines": setup.baselines.describe(),
                   "train_seconds": train_seconds, "overhead_seconds": float(sum(overhead)),
                   "overhead_per_round": [float(x) for x in overhead]}
    record = json_safe({**model.to_json(), "search": search_info, "diagnostics": diagnostics,
                        "leave_one_tree_out": entries, "recommended": recs})
    record["model"] = {k: record[k] for k in ("prior", "scales", "noise", "coefficients")}
    atomic_write_json(out / MODEL_FILE, record)
    plot_predicted(entries, names, out / PREDICTED_FILE,
                   title=f"{setup.config.name}: leave one tree out, predicted against measured (validation)")
    atomic_write_text(out / SUMMARY_MD, summary_markdown(record, f"branchnet search: {setup.config.name}"))
    return record


def _flops(setup: SearchSetup, partitions: Any) -> float | None:
    if setup.costs.stage_flops is None or setup.costs.head_flops is None:
        return None
    counts = np.array([len(p) for p in partitions], dtype=np.float64)
    return float(counts @ setup.costs.stage_flops + setup.costs.head_flops.sum())


# ---------------------------------------------------------------------------------
# The command


def search(config: Config, runs: str | os.PathLike | None = None, *, budgets: str | Sequence[Any] | None = None,
           sweep: int | None = None, networks: int | None = None, seeds: int = DEFAULT_SEEDS,
           measures: str | Sequence[str] | None = None, acquisition: str = "thompson", batch: int | None = None,
           resume: bool = False, force: bool = False, quiet: bool = False, jobs: str | int | None = 1,
           per_device: int | None = None, curves: bool = False) -> dict[str, Any] | None:
    """``branchnet search``: set up, run the loop, report (see the module docstring).

    Returns the record written to model.json (None on torchrun ranks other than 0). ``jobs``
    (``--jobs N|auto``) networks train at once on this machine (each rank's share under
    torchrun), ``per_device`` on each GPU (:mod:`branchnet.steps.jobs`). ``batch`` (proposals per
    round) defaults to the number of ranks times ``jobs``. ``curves`` draws every network's
    curves.png. ``--force`` starts over: the search directory is removed once every check has
    passed.
    """
    runs = Path(runs) if runs is not None else config.default_runs_dir()
    slots = plan_slots(jobs, per_device, config.train.device)  # a bad value stops before anything is written
    main = dist_utils.is_main()
    world = dist_utils.world_size()
    setup, error = None, None
    if main:
        try:
            setup = prepare_search(config, runs, budgets=budgets, sweep=sweep, networks=networks, seeds=seeds,
                                   measures=measures, acquisition=acquisition,
                                   batch=batch if batch is not None else world * slots.jobs, resume=resume,
                                   force=force)
            setup.token = uuid.uuid4().hex
        except BadInput as exc:
            error = str(exc)
    if dist_utils.is_distributed():
        error = dist_utils.broadcast_object(error)
        if error is None:
            setup = dist_utils.broadcast_object(setup)
    if error is not None:
        raise BadInput(error)
    assert setup is not None
    out = setup.directory
    if main:
        from branchnet.atomic import atomic_write_json, ensure_writable_dir

        if force and out.exists():
            shutil.rmtree(out)
            say(f"search: --force: removed {out} to start over")
        ensure_writable_dir(out)
        atomic_write_json(out / STUDY_SETTINGS_FILE, setup.settings)
        if not quiet:
            for note in setup.notes:
                say(f"search: {note}")
            have = len(setup.observations)
            say(f"search: {len(setup.budgets)} budget(s) ({', '.join(format_count(b) for b in setup.budgets)}), "
                f"seeds {', '.join(str(s) for s in setup.seeds)}, prior "
                f"{', '.join(m.upper() for m in setup.measures)}; {have} network(s) already trained, "
                f"{max(0, setup.networks - have)} to train ({setup.acquisition}, {setup.batch} per round)")
    from branchnet.data import prepare_splits

    prepare_splits(config, ("train", "val", "test"))
    rank = dist_utils.rank()
    if dist_utils.is_distributed():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()  # from here each rank trains whole networks alone
    slots = fit_slots(slots, -(-setup.batch // world))  # no more jobs than a round gives this rank
    if slots.jobs > 1 and main and not quiet:
        for note in slots.notes:
            say(f"search: {note}")
    with Pool(_train_job, setup, slots, quiet=quiet) if slots.jobs > 1 else contextlib.nullcontext() as pool:
        if rank != 0:
            _follow(setup, rank, world, quiet, pool)
            return None
        trainer = _Trainer(setup, world, quiet, pool)
        try:
            result = run_loop(_prior_model(setup), setup.space, setup.budgets, setup.networks, trainer,
                              seeds=setup.seeds, acquisition=setup.acquisition, batch=setup.batch, key=config.seed,
                              observations=list(setup.observations), proposals=list(setup.proposals))
        finally:
            _write_round(setup, trainer.round, [], finished=True)
    record = write_report(setup, result.model, result.recommended, result.overhead)
    if curves:
        from branchnet.steps.commit import draw_curves

        for obs in result.model.observations:
            draw_curves(search_network_dir(setup.runs, obs.tree_id, obs.seed))
    if not quiet:
        for budget, rec in record["recommended"].items():
            say(f"search: budget {format_count(float(budget))}: recommended {rec['tree_id']} ({rec['groups']}, "
                f"{format_count(rec['params'])} params), predicted Δ_MTL {rec['predicted']:+.2f} ± {rec['sd']:.2f}")
        diag = record["diagnostics"]
        within = [v["spearman"] for v in diag["spearman_within_budget"].values() if v["spearman"] is not None]
        overall = diag["spearman_networks"]
        say("search: leave one tree out: Spearman of predicted against measured Δ_MTL "
            + (f"{overall:+.2f}" if overall is not None else "-") + " over the networks"
            + (f", {np.mean(within):+.2f} within budgets on average" if within else ""))
        say(f"search: wrote {out / TREES_FILE}, {out / MODEL_FILE}, {out / SUMMARY_MD}, {out / PREDICTED_FILE} and "
            f"{len(record['recommended'])} tree-<budget>.json")
    return record


# ---------------------------------------------------------------------------------
# Any trained networks of a run, as observations


def collect_observations(config: Config, runs: str | os.PathLike, *, seeds: Sequence[int] | None = None,
                         places: Sequence[str] = ("search", "evaluate", "branched"),
                         split: str = FIT_SPLIT) -> tuple[list[Observation], list[str]]:
    """Every finished network of the run trained with this config's settings, as observations
    of ``split`` (``val`` or ``test``): the search's and the study's networks
    (``<place>/nets/<tree id>/seed<s>``) and ``branched/<name>`` (evaluation seed 0), optionally
    only those of ``seeds``. Returns the observations and a note per network left out (other
    settings, damaged). The search itself reads only its own seeds; this serves a person who
    fits the model to other networks (``tools/learned_evidence.py``)."""
    from branchnet.data import build_tasks
    from branchnet.runs import branched_dir, evaluate_dir
    from branchnet.steps.evaluate import costs_from_baselines
    from branchnet.tasks import multi_task_delta

    runs = Path(runs)
    if split not in ("val", "test"):
        raise BadInput(f"split {split!r}: give val or test")
    tasks = build_tasks(config)
    names = [t.name for t in tasks]
    baselines = find_baselines(config, runs, names, purpose="a Δ_MTL against it")
    costs = costs_from_baselines(baselines, names)
    base = {t: b[split][t] for t, b in baselines.metrics.items()}
    found: list[tuple[str, Path, int]] = []
    for place in places:
        if place == "branched":
            root = branched_dir(runs, "")
            found += [(f"branched/{d.name}", d, 0) for d in sorted(root.iterdir())] if root.is_dir() else []
            continue
        root = (search_dir(runs) if place == "search" else evaluate_dir(runs)) / STUDY_NETS_DIR
        for d in sorted(root.glob("*/seed*")) if root.is_dir() else []:
            try:
                found.append((f"{place}/nets/{d.parent.name}/{d.name}", d, int(d.name[4:])))
            except ValueError:
                continue
    out, notes = [], []
    for label, directory, seed in found:
        if seeds is not None and seed not in seeds:
            continue
        record, why = read_record(directory)
        if record is None:
            notes.append(f"{label}: {why}")
            continue
        metrics = read_metrics(directory, label, "retrain it")
        partitions = metrics.get("partitions")
        if not isinstance(partitions, list) or any(t not in metrics.get(split, {}) for t in names):
            notes.append(f"{label}: not a branched network of these tasks")
            continue
        if label.startswith("branched/"):
            from branchnet.steps.train_branched import branched_fingerprint

            expected = branched_fingerprint(config, partitions, baselines)
        else:
            expected = tree_network_fingerprint(config, partitions, baselines, seed)
        difference = first_difference(record.fingerprint, json_safe(expected))
        if difference is not None:
            notes.append(f"{label}: trained with other settings ({difference})")
            continue
        per_task = multi_task_delta(metrics[split], base, tasks)["per_task"]
        counts = np.array([len(p) for p in partitions], dtype=np.float64)
        params = int(round(float(counts @ costs.stage_params + costs.head_params.sum())))
        out.append(Observation(tree_id(partitions, names), [[list(g) for g in p] for p in partitions], seed,
                               per_task, params, str(directory)))
    return out, notes

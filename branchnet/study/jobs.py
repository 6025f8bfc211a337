"""The study of ``branchnet evaluate`` as data: which trees, why, and which networks to train.

No torch here: a :class:`StudyPlan` is made from affinity files and cost arrays alone
(docs/evaluate.md, "What is trained"):

* a **tree** (:class:`StudyTree`): a chain of partitions with its params and FLOPs, named by
  a stable id (``shared``, ``separate``, else ``t<groups per stage>-<hash>``, the same for
  the same partitions in every run, so its networks are found again);
* a **role** (:class:`Role`): why a tree is in the study: ``source`` is a scorer's name
  (``rsa``, ``fafs``, ``rsa:mean`` ...: the builder's tree of that measure and cost for the
  budget), ``random`` (drawn uniformly from the budget window), ``exhaustive``,
  ``shared`` or ``separate``; ``budget`` is the params budget (None for the last three);
  one tree may play several roles (the RSA and FAFS trees of a budget are often the same);
* a **job** (:class:`Job`): one network to train, ``(tree id, evaluation seed)``; every
  distinct tree is trained once per seed, whatever its roles.

Random trees are drawn without replacement by sequential uniform draws of ranks of the
window's :class:`~branchnet.tree.sampling.TreeSpace` (rejecting repeats), from a generator
seeded by the study's seed and the budget: a uniform random subset, and the first K of a
draw of K' > K trees are the K trees of a draw of K, so asking for more random trees later
trains only the new ones.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from branchnet.affinity import AffinityData
from branchnet.errors import BadInput
from branchnet.tree.costs import tree_dissimilarity, tree_flops, tree_params
from branchnet.tree.group_cost import GroupCost
from branchnet.tree.record import Partitions, canonical_partitions, separate_partitions, shared_partitions
from branchnet.units import format_count

#: Sources that are not a scorer's tree.
FIXED_SOURCES = ("random", "exhaustive", "shared", "separate")
#: Most trees ``evaluate --exhaustive`` trains (each once per seed).
EXHAUSTIVE_LIMIT = 1000
#: A measure's name: letters, digits and '-' (``:`` joins a cost, ``_`` separates CSV column parts).
MEASURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


# ---------------------------------------------------------------------------------
# Trees, roles, jobs


def tree_id(partitions: Partitions, tasks: Sequence[str]) -> str:
    """``shared``, ``separate``, or ``t<k_0>-<k_1>-...-<8 hex digits>`` (groups per stage and a
    hash of the canonical partitions): the same tree always gets the same id."""
    canon = canonical_partitions(partitions, tasks)
    depth = len(canon)
    if canon == shared_partitions(tasks, depth):
        return "shared"
    if canon == separate_partitions(tasks, depth):
        return "separate"
    digest = hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()[:8]
    return "t" + "-".join(str(len(p)) for p in canon) + f"-{digest}"


def compact_partitions(partitions: Partitions) -> str:
    """``seg+depth|normals / seg|depth|normals``: stages by ``/``, groups by ``|``, tasks by ``+``."""
    return " / ".join("|".join("+".join(g) for g in p) for p in partitions)


@dataclass(frozen=True)
class StudyTree:
    """One tree of the study: ``partitions`` canonical in the config's task order,
    ``params`` (int), ``flops`` per image (None when unknown)."""

    tree_id: str
    partitions: Partitions = field(compare=False, hash=False)
    params: int
    flops: float | None

    @property
    def groups(self) -> str:
        """Groups per stage, ``1-2-3-5``."""
        return "-".join(str(len(p)) for p in self.partitions)

    @property
    def compact(self) -> str:
        return compact_partitions(self.partitions)

    def tree_json(self, tasks: Sequence[str], locations: Sequence[str], backbone: str | None) -> dict[str, Any]:
        """The tree.json object the network is trained from (docs/design.md, "File formats")."""
        out = {"tasks": list(tasks), "locations": list(locations),
               "partitions": [[list(g) for g in p] for p in self.partitions], "params": self.params,
               "flops": self.flops, "study_id": self.tree_id}
        if backbone:
            out["backbone"] = backbone
        return out


@dataclass(frozen=True)
class Role:
    """Why a tree is in the study (see the module docstring)."""

    source: str
    budget: int | None
    tree_id: str


@dataclass(frozen=True)
class Job:
    """One network to train: the tree ``tree_id`` with evaluation seed ``seed``."""

    tree_id: str
    seed: int


@dataclass(frozen=True)
class Scorer:
    """A measure and a group cost: scores every tree (a ``dissimilarity_<column>`` of trees.csv)
    and builds its tree of each budget (the role ``source = name``).

    ``name`` is the measure (``rsa``) for the paper's ``max`` cost and for a learned model's
    cost, else ``<measure>:<cost>``. ``window``: its tree of budget B is the best tree of the
    window ``[0.9 B, B]`` (the learned model's recommended tree, docs/design.md "Learned sharing
    cost"), not the best tree of at most B params (the paper's builder).
    """

    measure: str
    cost: GroupCost
    affinity: AffinityData = field(compare=False, hash=False, repr=False)
    window: bool = False

    @property
    def name(self) -> str:
        return self.measure if self.cost.name in ("max", "learned") else f"{self.measure}:{self.cost.name}"

    @property
    def column(self) -> str:
        """``dissimilarity_rsa``, ``dissimilarity_rsa_mean``."""
        return "dissimilarity_" + self.name.replace(":", "_")

    def dissimilarity(self, partitions: Partitions) -> float:
        return tree_dissimilarity(partitions, self.affinity.tasks, self.affinity.affinity, self.cost)


@dataclass
class Costs:
    """Per-stage and per-head params and FLOPs of the run's networks (config task order).

    ``stage_params``/``stage_flops`` (D,), ``head_params``/``head_flops`` (N,)."""

    stage_params: np.ndarray
    head_params: np.ndarray
    stage_flops: np.ndarray | None = None
    head_flops: np.ndarray | None = None

    def search_costs(self) -> dict[str, Any]:
        """The keyword costs of :func:`~branchnet.tree.search.search_tree` and the samplers."""
        return {"stage_params": self.stage_params, "head_params": self.head_params,
                "stage_flops": self.stage_flops, "head_flops": self.head_flops}


@dataclass
class StudyPlan:
    """Everything ``branchnet evaluate`` trains and reports, before any training.

    ``trees`` (insertion order: shared, separate, then by budget) by id; ``roles`` in the
    same order; ``seeds`` the evaluation seeds 0..S-1; ``budgets`` increasing; ``windows``
    each budget's ``[0.9 B, B]``; ``population`` ``"random"`` or ``"exhaustive"`` (what a
    measure's tree is compared with); ``window_sizes`` how many trees each window holds
    (ends excluded); ``notes`` what the user should be told (a window with fewer trees than
    ``--random``).
    """

    tasks: list[str]
    locations: list[str]
    trees: dict[str, StudyTree]
    roles: list[Role]
    seeds: list[int]
    budgets: list[int]
    windows: dict[int, tuple[float, float]]
    population: str
    scorers: list[Scorer]
    window_sizes: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def jobs(self) -> list[Job]:
        """Every network, seed by seed (all trees of seed 0 first), trees in plan order."""
        return [Job(t, s) for s in self.seeds for t in self.trees]


# ---------------------------------------------------------------------------------
# Budgets


def in_window(params: float, window: tuple[float, float]) -> bool:
    """``0.9 B <= params <= B`` up to float rounding (as the samplers and the search check it)."""
    low, high = window
    return low * (1 - 1e-9) <= float(params) <= high * (1 + 1e-9)


def sweep_budgets(low: float, high: float, count: int) -> list[int]:
    """``count`` budgets evenly spaced strictly between the all-shared (``low``) and the
    all-separate (``high``) params: ``low + (high - low) i / (count + 1)``, i = 1..count."""
    from branchnet.units import MAX_NETWORKS, check_int

    check_int(count, "--sweep", 1, MAX_NETWORKS, " budgets (e.g. --sweep 3)")
    return [int(round(low + (high - low) * i / (count + 1))) for i in range(1, count + 1)]


def check_budgets(budgets: Sequence[float], low: float, high: float) -> list[int]:
    """The budgets as sorted distinct integers; :class:`BadInput` for one outside
    ``[low, high]`` (the all-shared and all-separate params)."""
    if not budgets:
        raise BadInput("give at least one budget (--budgets 1.2M,1.6M or --sweep K)")
    for b in budgets:
        if not low <= b <= high:
            raise BadInput(f"budget {format_count(b)} lies outside [{format_count(low)}, {format_count(high)}], "
                           f"the params of the all-shared ({int(low)}) and all-separate ({int(high)}) networks; "
                           "give budgets between them")
    return sorted({int(round(b)) for b in budgets})


# ---------------------------------------------------------------------------------
# Drawing and building


def draw_ranks(size: int, count: int, key: str) -> list[int]:
    """``min(count, size)`` distinct ranks of ``[0, size)``, uniform, by sequential draws
    rejecting repeats from ``random.Random(key)``; the draw of K is a prefix of the draw of
    K' > K. All ranks, in order, when ``count >= size``."""
    if count >= size:
        return list(range(size))
    rng = random.Random(key)
    seen: set[int] = set()
    ranks: list[int] = []
    while len(ranks) < count:
        r = rng.randrange(size)
        if r not in seen:
            seen.add(r)
            ranks.append(r)
    return ranks


def align_affinity(data: AffinityData, tasks: Sequence[str], depth: int, source: str) -> AffinityData:
    """``data`` with its tasks in the order of ``tasks`` (the config's); :class:`BadInput` when
    it is for other tasks or another number of stages."""
    if sorted(data.tasks) != sorted(tasks):
        raise BadInput(f"{source} is for tasks {', '.join(data.tasks)} but the config has {', '.join(tasks)}; "
                       "measure it from this run's models (`branchnet affinity --config ...`)")
    if data.num_locations != depth:
        raise BadInput(f"{source} has {data.num_locations} locations but the networks have {depth} stages; "
                       "measure it on this backbone")
    order = [data.tasks.index(t) for t in tasks]
    a = np.asarray(data.affinity, dtype=np.float64)[:, order][:, :, order]
    return AffinityData(affinity=a, tasks=list(tasks), locations=list(data.locations), backbone=data.backbone,
                        input_size=data.input_size, measure=data.measure)


def _priced(partitions: Partitions, tasks: Sequence[str], costs: Costs) -> StudyTree:
    canon = canonical_partitions(partitions, tasks)
    params = int(round(float(tree_params(canon, tasks, costs.stage_params, costs.head_params))))
    flops = None
    if costs.stage_flops is not None and costs.head_flops is not None:
        flops = float(tree_flops(canon, tasks, costs.stage_flops, costs.head_flops))
    return StudyTree(tree_id(canon, tasks), canon, params, flops)


def plan_study(tasks: Sequence[str], locations: Sequence[str], costs: Costs, scorers: Sequence[Scorer],
               budgets: Sequence[float], seeds: int, random_count: int | None = 8, exhaustive: bool = False,
               branch_stages: int | None = None, sample_seed: int = 0,
               exhaustive_limit: int = EXHAUSTIVE_LIMIT) -> StudyPlan:
    """The study (see the module docstring). ``budgets`` must lie in the all-shared/all-separate
    range (:func:`check_budgets`); each window must hold a tree other than the ends.

    ``random_count`` random trees per budget (all of the window's when it holds fewer, with a
    note), or with ``exhaustive`` every tree (``branch_stages``: those branching in the last L
    stages only; at most ``exhaustive_limit``), whose window members then form each budget's
    population. Raises :class:`BadInput` (one line) for any of these faults.
    """
    from branchnet.tree.sampling import TreeSpace, budget_window, random_space
    from branchnet.tree.search import search_tree

    tasks, locations = list(tasks), list(locations)
    depth = len(locations)
    if seeds < 1:
        raise BadInput(f"--seeds {seeds}: train every tree with at least one seed")
    if not scorers:
        raise BadInput("give at least one measure (--measures rsa,fafs)")
    if exhaustive and random_count is not None:
        raise BadInput("--exhaustive trains every tree, so it takes no --random K; give one of the two")
    if branch_stages is not None and not exhaustive:
        raise BadInput("--branch-stages L restricts --exhaustive; add --exhaustive (or drop --branch-stages)")
    if not exhaustive and (random_count is None or random_count < 1):
        raise BadInput(f"--random {random_count}: draw at least one random tree per budget (e.g. --random 8)")
    low = float(tree_params(shared_partitions(tasks, depth), tasks, costs.stage_params, costs.head_params))
    high = float(tree_params(separate_partitions(tasks, depth), tasks, costs.stage_params, costs.head_params))
    budgets = check_budgets(budgets, low, high)
    search = costs.search_costs()
    plan = StudyPlan(tasks, locations, {}, [], list(range(int(seeds))), budgets, {},
                     "exhaustive" if exhaustive else "random", list(scorers))

    def add(tree: StudyTree, source: str, budget: int | None) -> None:
        plan.trees.setdefault(tree.tree_id, tree)
        role = Role(source, budget, tree.tree_id)
        if role not in plan.roles:
            plan.roles.append(role)

    for end in (shared_partitions(tasks, depth), separate_partitions(tasks, depth)):
        tree = _priced(end, tasks, costs)
        add(tree, tree.tree_id, None)
    everything: list[StudyTree] = []
    if exhaustive:
        space = TreeSpace(tasks, costs.stage_params, costs.head_params, None, branch_stages, include_ends=False)
        if space.size > exhaustive_limit:
            where = f" that branch in the last {branch_stages} stages" if branch_stages is not None else ""
            raise BadInput(f"there are {space.size:,} trees{where} ({len(tasks)} tasks, {depth} stages), more than "
                           f"the {exhaustive_limit:,} --exhaustive trains; restrict them with --branch-stages L "
                           "(branch in the last L stages only) or draw some per budget with --random K")
        everything = [_priced(space.partitions(r), tasks, costs) for r in range(space.size)]
    for budget in budgets:
        window = budget_window(budget)
        plan.windows[budget] = window
        if exhaustive:
            members = [t for t in everything if in_window(t.params, window)]
            if not members:
                raise BadInput(f"the budget window [{format_count(window[0])}, {format_count(window[1])}] params "
                               f"(0.9 B to B) of budget {format_count(budget)} holds none of the --exhaustive trees "
                               "other than all-shared and all-separate; choose a budget whose window holds trees")
            plan.window_sizes[budget] = len(members)
        else:
            space = random_space(_affinity_stub(tasks, locations), budget, search)  # BadInput when empty
            plan.window_sizes[budget] = space.size
            if random_count >= space.size:
                plan.notes.append(f"budget {format_count(budget)}: the window [{format_count(window[0])}, "
                                  f"{format_count(window[1])}] holds {space.size} tree(s), not more than "
                                  f"--random {random_count}; taking all of them")
        for scorer in scorers:
            built = search_tree(scorer.affinity, budget, cost=scorer.cost,
                                min_params=window[0] if scorer.window else None, **search)
            add(_priced(built.partitions, tasks, costs), scorer.name, budget)
        if not exhaustive:
            for rank in draw_ranks(space.size, int(random_count), f"branchnet-evaluate:{sample_seed}:{budget}"):
                add(_priced(space.partitions(rank), tasks, costs), "random", budget)
    for tree in everything:
        add(tree, "exhaustive", None)
    return plan


def _affinity_stub(tasks: Sequence[str], locations: Sequence[str]) -> AffinityData:
    """An affinity with no information, for the samplers (they only read tasks and costs)."""
    n, d = len(tasks), len(locations)
    return AffinityData(affinity=np.broadcast_to(np.eye(n), (d, n, n)).copy(), tasks=list(tasks),
                        locations=list(locations))


def scorers_for(affinities: Mapping[str, AffinityData], costs: Sequence[GroupCost]) -> list[Scorer]:
    """One :class:`Scorer` per (measure, cost), measures first: ``rsa, rsa:mean, fafs, fafs:mean``."""
    out = []
    for measure, data in affinities.items():
        if not MEASURE_NAME.match(measure):
            raise BadInput(f"measure name '{measure}' must be letters, digits and '-' (e.g. rsa, fafs, rsa-e1)")
        for cost in costs:
            out.append(Scorer(measure, cost, data))
    return out

"""What sharing costs each task, fitted from trained trees: :class:`SharingModel` and ``model.json``.

docs/design.md, "Learned sharing cost". The model (:mod:`branchnet.learned.features`) predicts
each task's change ``r_t`` (percent, its term of Δ_MTL) in any tree from which tasks it shares
which stage with; the affinity measures are its prior (before any tree is trained it ranks
trees by their mean pairwise dissimilarity), one offset per training seed and task absorbs
what a seed does to every tree, and the posterior is Gaussian
(:class:`~branchnet.learned.bayes.BlockBayesLinear`), so every prediction comes with an
interval and every draw of the coefficients is a stage-additive group cost the tree
searches optimise (:meth:`SharingModel.cost`).

``model.json`` (:meth:`SharingModel.to_json`, :func:`load_model`) holds the tasks, locations,
prior affinities, the scales chosen by the evidence and the observations the model was fitted
on, so loading it refits the same posterior in closed form; the coefficients (posterior mean
and sd per block, the pair weights ``W`` and the pair costs ``C``) are written beside them
for people to read, and the search adds its diagnostics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from branchnet.errors import BadInput
from branchnet.learned.bayes import BlockBayesLinear
from branchnet.learned.features import BLOCKS, SharingDesign
from branchnet.tree.group_cost import GroupCost, learned_cost
from branchnet.tree.record import Partitions
from branchnet.tree.search.problem import labels_to_partitions, partitions_to_labels

MODEL_FORMAT = "branchnet.learned/1"
#: The model file of a search directory.
MODEL_FILE = "model.json"

#: Default prior sd of each coefficient block, percentage points of a task's score
#: (``b`` fixed; the others learned from the evidence).
DEFAULT_SCALES = {"b": 10.0, "u": 3.0, "mu": 0.5, "kappa": 0.5, "alpha": 0.3, "v": 0.3}
#: Blocks whose scale is learned.
LEARNED_SCALES = ("u", "mu", "kappa", "alpha", "v")
#: Default noise sd of one task's score in one network (percentage points).
DEFAULT_NOISE = 3.0
#: Prior mean of the summed measure coefficient: points of a task's score lost per stage it
#: shares with a task at the measure's typical (root mean square) dissimilarity.
DEFAULT_ALPHA0 = 0.3


@dataclass
class Observation:
    """One trained network: its tree, training seed and each task's change in percent.

    ``per_task`` maps every task to ``r_t = 100 (-1)^l (M_t - B_t) / B_t`` (docs/design.md),
    ``source`` says where it came from (a network directory), ``params`` the tree's params.
    """

    tree_id: str
    partitions: Partitions
    seed: int
    per_task: Mapping[str, float]
    params: int | None = None
    source: str = ""

    @property
    def delta_mtl(self) -> float:
        return float(np.mean([float(v) for v in self.per_task.values()]))

    def to_json(self) -> dict[str, Any]:
        return {"tree_id": self.tree_id, "partitions": [[list(g) for g in p] for p in self.partitions],
                "seed": int(self.seed), "per_task": {k: float(v) for k, v in self.per_task.items()},
                "delta_mtl": self.delta_mtl, "params": self.params, "source": self.source}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Observation":
        return cls(str(obj["tree_id"]), [[list(map(str, g)) for g in p] for p in obj["partitions"]],
                   int(obj["seed"]), {str(k): float(v) for k, v in obj["per_task"].items()},
                   None if obj.get("params") is None else int(obj["params"]), str(obj.get("source", "")))


@dataclass
class SharingModel:
    """The learned sharing cost of N tasks over D stages (see the module docstring).

    Attributes:
        tasks, locations: names, in the order of every array.
        measures: measure name -> (D, N, N) affinity, the prior (may be empty: then the
            prior ranks every tree alike and only data move it).
        alpha0: prior mean of the summed measure coefficient (:data:`DEFAULT_ALPHA0`).
        scales: prior sd per block (:data:`DEFAULT_SCALES`); after :meth:`fit` those chosen.
        noise: noise sd per task (:data:`DEFAULT_NOISE`); after :meth:`fit` those chosen.
        sources: measure name -> the file it was read from (recorded in model.json).
    """

    tasks: list[str]
    locations: list[str]
    measures: Mapping[str, np.ndarray] = field(default_factory=dict)
    alpha0: float = DEFAULT_ALPHA0
    scales: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SCALES))
    noise: dict[str, float] | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tasks, self.locations = list(self.tasks), list(self.locations)
        if len(self.tasks) < 2:
            raise BadInput("a learned sharing cost needs at least two tasks")
        if len(set(self.tasks)) != len(self.tasks):
            raise BadInput("task names must be distinct")
        self.measures = {str(k): np.asarray(v, dtype=np.float64) for k, v in self.measures.items()}
        self.scales = {**DEFAULT_SCALES, **{k: float(v) for k, v in self.scales.items()}}
        if self.noise is None:
            self.noise = {t: DEFAULT_NOISE for t in self.tasks}
        # the centres of the scales' hyperprior: every fit that learns the scales starts here,
        # so a fit depends on its data alone (a resumed search proposes what an uninterrupted one does)
        self.prior_scales = dict(self.scales)
        self.prior_noise = dict(self.noise)
        self.observations: list[Observation] = []
        self.design = SharingDesign(len(self.tasks), len(self.locations), self.measures, ())
        self.regression = self._regression(self.design, self.scales, self.noise, learn=True)
        self.regression.fit(np.zeros((0, self.design.num_coefficients)), np.zeros(0))

    # -- fitting --------------------------------------------------------------------------

    def _regression(self, design: SharingDesign, scales: Mapping[str, float], noise: Mapping[str, float],
                    learn: bool) -> BlockBayesLinear:
        return BlockBayesLinear(design.block_sizes(), [scales[b] for b in BLOCKS],
                                [learn and b in LEARNED_SCALES for b in BLOCKS], design.prior_mean(self.alpha0),
                                [noise[t] for t in self.tasks], learn_noise=learn)

    def labels(self, trees: Sequence[Any]) -> np.ndarray:
        """(K, D, N) labels of trees given as partitions of task names or label arrays."""
        out = []
        for tree in trees:
            if isinstance(tree, np.ndarray):
                out.append(np.asarray(tree, dtype=np.int64).reshape(len(self.locations), len(self.tasks)))
            else:
                out.append(partitions_to_labels(tree, self.tasks))
        return np.stack(out) if out else np.zeros((0, len(self.locations), len(self.tasks)), np.int64)

    def _rows(self, observations: Sequence[Observation]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels = self.labels([o.partitions for o in observations])
        rows = self.design.task_rows(labels, [o.seed for o in observations])
        y = np.array([[float(o.per_task[t]) for t in self.tasks] for o in observations])
        groups = np.tile(np.arange(len(self.tasks)), len(observations))
        return rows.reshape(-1, rows.shape[-1]), y.reshape(-1), groups

    def fit(self, observations: Sequence[Observation], learn: bool = True) -> "SharingModel":
        """Fit the posterior to ``observations``; with ``learn`` the block and noise scales are
        chosen by the evidence (from the hyperprior's centres, the scales the model was made
        with), else the current ones are kept.

        :class:`BadInput` when an observation lacks a task or holds a non-finite change.
        """
        observations = list(observations)
        for o in observations:
            missing = [t for t in self.tasks if t not in o.per_task]
            if missing:
                raise BadInput(f"network {o.source or o.tree_id} has no change for task(s) {', '.join(missing)}; "
                               "it was trained on other tasks")
            if not all(np.isfinite(float(v)) for v in o.per_task.values()):
                raise BadInput(f"network {o.source or o.tree_id} has a NaN or infinite metric; retrain it")
        seeds = sorted({o.seed for o in observations})
        self.design = SharingDesign(len(self.tasks), len(self.locations), self.measures, seeds)
        x, y, groups = self._rows(observations)
        if learn:
            regression = self._regression(self.design, self.prior_scales, self.prior_noise, True)
        else:
            regression = self._regression(self.design, self.scales, self.noise, False)
        regression.fit(x, y, groups, learn=learn)
        self.regression = regression
        self.observations = observations
        if learn:
            self.scales = {b: float(s) for b, s in zip(BLOCKS, regression.scales_)}
            self.noise = {t: float(s) for t, s in zip(self.tasks, regression.noise_)}
        return self

    def without(self, keep: Sequence[bool]) -> "SharingModel":
        """The posterior on the observations where ``keep`` is true, at this fit's scales (leave-out)."""
        twin = SharingModel(self.tasks, self.locations, self.measures, self.alpha0, dict(self.prior_scales),
                            dict(self.prior_noise), dict(self.sources))
        twin.scales, twin.noise = dict(self.scales), dict(self.noise or {})
        twin.design = self.design  # the same columns (seeds), so coefficients line up
        kept = [o for o, k in zip(self.observations, keep) if k]
        x, y, groups = twin._rows(kept) if kept else (np.zeros((0, self.design.num_coefficients)), np.zeros(0),
                                                       np.zeros(0, np.int64))
        twin.regression = self.regression.refit(x, y, groups)
        twin.observations = kept
        return twin

    # -- predicting ------------------------------------------------------------------------

    def _seed_spread(self, seed: int | None, noise: bool) -> float:
        """The variance an unseen seed's offsets add to a task's score (0 for a fitted seed)."""
        return self.scales["u"] ** 2 if noise and self.design.seed_index(seed) is None else 0.0

    def predict_tasks(self, trees: Sequence[Any], seed: int | None = None,
                      noise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Each task's predicted change in each tree, (K, N) mean and sd (percent).

        ``seed``: a training seed of the fit (its offsets count), or None (an unseen seed:
        offset 0). With ``noise`` the sd is that of a new network's measured change (noise,
        and an unseen seed's offset), else of the expected change.
        """
        labels = self.labels(trees)
        rows = self.design.task_rows(labels, [seed] * len(labels))
        k, n, p = rows.shape
        groups = np.tile(np.arange(n), k)
        mean, sd = self.regression.predict(rows.reshape(-1, p), return_std=True, groups=groups, noise=noise)
        var = sd ** 2 + self._seed_spread(seed, noise)
        return mean.reshape(k, n), np.sqrt(var).reshape(k, n)

    def predict_delta(self, trees: Sequence[Any], seed: int | None = None,
                      noise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Predicted Δ_MTL of each tree, (K,) mean and sd (percent); ``seed`` and ``noise`` as
        in :meth:`predict_tasks` (noise of different tasks taken as independent)."""
        labels = self.labels(trees)
        rows = self.design.delta_rows(labels, [seed] * len(labels))
        mean, sd = self.regression.predict(rows, return_std=True)
        var = sd ** 2
        if noise:
            var = var + sum(s ** 2 for s in self.noise.values()) / len(self.tasks) ** 2
            var = var + self._seed_spread(seed, True) / len(self.tasks)
        return mean, np.sqrt(var)

    # -- the group cost ----------------------------------------------------------------------

    def pair_costs(self, theta: np.ndarray | None = None) -> np.ndarray:
        """(D, N, N) pair costs ``C`` of the posterior mean (or of coefficients ``theta``)."""
        return self.design.pair_costs(self.regression.coef_ if theta is None else theta)

    def cost(self, theta: np.ndarray | None = None) -> GroupCost:
        """The ``learned`` :class:`GroupCost` of the posterior mean (or of ``theta``): a tree's
        dissimilarity under it is ``intercept - predicted Δ_MTL`` at an unseen seed."""
        return learned_cost(self.pair_costs(theta))

    def sample(self, rng: np.random.Generator, size: int = 1) -> np.ndarray:
        """``size`` draws of the coefficients from the posterior, (size, P)."""
        return self.regression.sample_coef(rng, size)

    def intercept(self) -> float:
        """Predicted Δ_MTL of the all-separate tree at an unseen seed (posterior mean)."""
        return float(self.design.intercept(self.regression.coef_))

    # -- model.json ------------------------------------------------------------------------------

    def coefficients(self) -> dict[str, Any]:
        """The posterior mean and sd of every coefficient block, named; ``W`` (N, D, N) and the
        pair costs ``C`` (D, N, N) of the mean."""
        mean, sd = self.regression.coef_, np.sqrt(np.diag(self.regression.coef_cov_))
        des, tasks = self.design, self.tasks

        def blocks(theta: np.ndarray) -> dict[str, Any]:
            n, d = len(tasks), len(self.locations)
            v = np.zeros((n, d, n))
            v[des._v_index >= 0] = theta[des.slices["v"]]
            u = theta[des.slices["u"]].reshape(len(des.seeds), n)
            return {"b": dict(zip(tasks, theta[des.slices["b"]].tolist())),
                    "u": {str(s): dict(zip(tasks, row.tolist())) for s, row in zip(des.seeds, u)},
                    "mu": dict(zip(self.locations, theta[des.slices["mu"]].tolist())),
                    "kappa": {t: dict(zip(self.locations, row.tolist()))
                              for t, row in zip(tasks, theta[des.slices["kappa"]].reshape(n, d))},
                    "alpha": dict(zip(self.measures, theta[des.slices["alpha"]].tolist())),
                    "v": v.tolist()}

        return {"mean": blocks(mean), "sd": blocks(sd), "W": des.pair_weights(mean).tolist(),
                "pair_costs": des.pair_costs(mean).tolist(), "intercept": self.intercept()}

    def to_json(self) -> dict[str, Any]:
        """The model.json object (see the module docstring); every number finite."""
        return {"format": MODEL_FORMAT, "tasks": self.tasks, "locations": self.locations,
                "prior": {"alpha0": self.alpha0,
                          "measures": {m: {"affinity": a.tolist(), "source": self.sources.get(m, "")}
                                       for m, a in self.measures.items()}},
                "scales": dict(self.scales), "noise": dict(self.noise or {}),
                "hyperprior": {"scales": dict(self.prior_scales), "noise": dict(self.prior_noise)},
                "log_evidence": float(self.regression.log_evidence_),
                "observations": [o.to_json() for o in self.observations],
                "coefficients": self.coefficients()}

    @classmethod
    def from_json(cls, obj: Any, source: str = "model.json") -> "SharingModel":
        """The model of a model.json object, refitted in closed form at its recorded scales.

        :class:`BadInput` (one line) for anything that is not such a file.
        """
        if not isinstance(obj, Mapping) or obj.get("format") != MODEL_FORMAT:
            raise BadInput(f"{source} is not a learned model (format {MODEL_FORMAT}); make one with "
                           "`branchnet search`")
        try:
            prior = obj["prior"]
            measures = {str(m): np.asarray(v["affinity"], dtype=np.float64) for m, v in prior["measures"].items()}
            centres = obj.get("hyperprior") or {"scales": obj["scales"], "noise": obj["noise"]}
            model = cls([str(t) for t in obj["tasks"]], [str(x) for x in obj["locations"]], measures,
                        float(prior["alpha0"]), {str(k): float(v) for k, v in centres["scales"].items()},
                        {str(k): float(v) for k, v in centres["noise"].items()},
                        {m: str(v.get("source", "")) for m, v in prior["measures"].items()})
            model.scales = {**model.scales, **{str(k): float(v) for k, v in obj["scales"].items()}}
            model.noise = {str(k): float(v) for k, v in obj["noise"].items()}
            if sorted(model.noise) != sorted(model.tasks):
                raise ValueError("noise scales are not one per task")
            observations = [Observation.from_json(o) for o in obj["observations"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInput(f"{source} is not a readable learned model ({type(exc).__name__}: {exc}); "
                           "make it again with `branchnet search`") from None
        return model.fit(observations, learn=False)


def load_model(path: str | os.PathLike) -> SharingModel:
    """The :class:`SharingModel` of a model.json (or of the directory holding one, e.g. ``R/search``)."""
    import json

    from branchnet.atomic import read_user_text

    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise BadInput(f"no learned model at {path}; make one with `branchnet search --config C`")
    text = read_user_text(path, "learned model", "a model.json made by `branchnet search`")
    try:
        obj = json.loads(text)
    except ValueError:
        raise BadInput(f"{path} is not readable JSON; make it again with `branchnet search`") from None
    return SharingModel.from_json(obj, str(path))


def tree_partitions(model: SharingModel, labels: np.ndarray) -> Partitions:
    """Canonical partitions of task names of a (D, N) label array."""
    return labels_to_partitions(np.asarray(labels), model.tasks)

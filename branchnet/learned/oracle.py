"""A synthetic oracle for the search loop: trees "trained" in microseconds from a hidden truth.

The loop (:mod:`branchnet.learned.loop`) must find each budget's best tree from a few noisy
networks. To test that without training, a :class:`SharingOracle` holds a hidden pairwise
structure (pair weights ``W`` (N, D, N) and per-task intercepts), and "trains" a tree with a
seed by returning each task's change as the model of docs/design.md would make it, plus a
per-seed offset and noise::

    r_t = b_t + u[seed, t] + sum_d sum_{j != t} W[t, d, j] s_d(t, j) + e,   e ~ N(0, noise_t^2)

(the same tree and seed always give the same numbers). Its best tree of a budget is known
exactly (the exact search under the true pair costs), so a loop's recommendation can be
scored. The hidden structures come from several generator families (:data:`FAMILIES`), and
the affinity the loop gets as its prior from several qualities (:data:`PRIORS`), so a result
holds on structures the model was not written for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from branchnet.errors import unknown_choice
from branchnet.learned.features import SharingDesign
from branchnet.learned.model import Observation
from branchnet.learned.propose import Proposal, SearchSpace
from branchnet.tree.group_cost import learned_cost
from branchnet.tree.record import Partitions
from branchnet.tree.search.problem import partitions_to_labels

#: Generator families of the hidden structure:
#: ``pairwise`` independent pair weights around a cost that grows with depth;
#: ``clusters`` nested hidden clusters (sharing inside a cluster helps, across it costs);
#: ``sensitive`` a few tasks lose much from any sharing (heavy-tailed task sensitivities);
#: ``asymmetric`` tasks at latent positions, each losing by distance times its own sensitivity.
FAMILIES = ("pairwise", "clusters", "sensitive", "asymmetric")
#: Qualities of the prior affinity handed to the loop: ``informative`` (correlated with the
#: truth), ``none`` (unrelated), ``misleading`` (anti-correlated).
PRIORS = ("informative", "none", "misleading")


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class SharingOracle:
    """A hidden truth over a :class:`~branchnet.learned.propose.SearchSpace` (see the module docstring).

    ``weights`` (N, D, N) true ``W`` (zero where j == t); ``base`` (N,) ``b``; ``noise`` (N,)
    the sd of a task's change in one network; ``seed_sd`` the sd of a seed's per-task offset;
    ``key`` makes the noise reproducible.
    """

    space: SearchSpace
    weights: np.ndarray
    base: np.ndarray
    noise: np.ndarray
    seed_sd: float
    key: int
    family: str = "pairwise"

    @classmethod
    def generate(cls, space: SearchSpace, family: str, key: int, noise: float = 1.0,
                 seed_sd: float = 2.0) -> "SharingOracle":
        """A hidden structure of ``family`` (:data:`FAMILIES`) drawn with ``key``; per-task noise
        sd uniform in ``[0.5, 1.5] * noise``."""
        if family not in FAMILIES:
            raise unknown_choice("oracle family", family, FAMILIES)
        n, d = len(space.tasks), len(space.locations)
        rng = _rng("oracle", family, key, n, d)
        depth = (np.arange(d) + 1) / d  # deeper stages cost more
        if family == "pairwise":
            w = -0.6 * depth[None, :, None] + rng.normal(0.0, 0.7, (n, d, n))
        elif family == "clusters":
            w = np.zeros((n, d, n))
            labels = np.zeros(n, dtype=np.int64)
            for stage in range(d):  # nested: each stage may split a cluster of the stage above
                if rng.random() < 0.6:
                    target = rng.integers(labels.max() + 1)
                    members = np.flatnonzero(labels == target)
                    if len(members) > 1:
                        labels[rng.choice(members, size=max(1, len(members) // 2), replace=False)] = labels.max() + 1
                same = labels[:, None] == labels[None, :]
                w[:, stage, :] = np.where(same, 0.4, -1.2 * depth[stage] - 0.4)
            w += rng.normal(0.0, 0.2, w.shape)
        elif family == "sensitive":
            sensitivity = np.abs(rng.standard_t(2, n)) * 0.6
            w = -sensitivity[:, None, None] * depth[None, :, None] + rng.normal(0.0, 0.3, (n, d, n))
        else:  # asymmetric
            where = rng.normal(0.0, 1.0, (n, 2))
            distance = np.linalg.norm(where[:, None] - where[None, :], axis=-1)
            gain = rng.uniform(0.2, 1.5, n)
            w = 0.3 - gain[:, None, None] * distance[:, None, :] * depth[None, :, None]
        w[np.arange(n), :, np.arange(n)] = 0.0
        return cls(space, w, rng.normal(0.0, 3.0, n), rng.uniform(0.5, 1.5, n) * noise, seed_sd, key, family)

    # -- the truth -------------------------------------------------------------------------

    def pair_costs(self) -> np.ndarray:
        """The true (D, N, N) pair costs ``C[d, i, j] = -(W[i, d, j] + W[j, d, i])``."""
        c = -(self.weights + np.swapaxes(self.weights, 0, 2))
        return np.moveaxis(c, 1, 0)

    def value(self, trees: Sequence[Partitions]) -> np.ndarray:
        """The expected Δ_MTL of each tree at an unseen seed (no noise), (K,)."""
        labels = np.stack([partitions_to_labels(t, self.space.tasks) for t in trees])
        s = SharingDesign.sharing(labels)  # (K, D, N, N) [k, d, t, j]
        gains = np.einsum("tdj,kdtj->kt", self.weights, s)
        return (self.base[None, :] + gains).mean(axis=1)

    def best(self, budget: float) -> Partitions:
        """The window's tree of highest expected Δ_MTL (exact search under the true costs)."""
        return self.space.best_tree(learned_cost(self.pair_costs()), budget)

    def prior(self, quality: str = "informative", key: int = 0) -> dict[str, np.ndarray]:
        """An affinity measure for the loop's prior, (D, N, N) in [0, 1] with ones on the
        diagonal: the true pair costs rescaled (``informative``), reversed (``misleading``) or
        replaced by noise (``none``), each with noise added."""
        if quality not in PRIORS:
            raise unknown_choice("prior quality", quality, PRIORS)
        rng = _rng("prior", self.family, self.key, quality, key)
        cost = self.pair_costs()
        n = cost.shape[1]
        if quality == "none":
            cost = rng.normal(size=cost.shape)
        elif quality == "misleading":
            cost = -cost
        cost = (cost - cost.mean()) / (cost.std() or 1.0) + rng.normal(0.0, 0.7, cost.shape)
        cost = (cost + cost.transpose(0, 2, 1)) / 2
        dissimilarity = (cost - cost.min()) / ((cost.max() - cost.min()) or 1.0)
        affinity = 1.0 - dissimilarity
        affinity[:, np.arange(n), np.arange(n)] = 1.0
        return {"prior": affinity}

    # -- "training" ------------------------------------------------------------------------

    def measure(self, tree: Partitions, seed: int, tree_id: str = "") -> dict[str, float]:
        """Each task's change of the tree trained with ``seed``: always the same for the same pair."""
        labels = partitions_to_labels(tree, self.space.tasks)
        s = SharingDesign.sharing(labels[None])[0]
        gains = np.einsum("tdj,dtj->t", self.weights, s)
        offsets = _rng("seed", self.key, int(seed)).normal(0.0, self.seed_sd, len(self.base))
        noise = _rng("noise", self.key, int(seed), labels.tobytes()).normal(0.0, 1.0, len(self.base)) * self.noise
        return dict(zip(self.space.tasks, (self.base + offsets + gains + noise).tolist()))

    def train(self, proposals: Sequence[Proposal]) -> list[Observation]:
        """The loop's trainer: one observation per proposal."""
        return [Observation(p.tree_id, p.partitions, p.seed, self.measure(p.partitions, p.seed),
                            self.space.params(p.partitions), "oracle") for p in proposals]

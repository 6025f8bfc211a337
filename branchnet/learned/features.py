"""The linear design of the learned sharing cost: which tasks share which stage, as features.

docs/design.md, "Learned sharing cost". A tree is a (D, N) label array (``labels[d, t]`` task
t's group at stage d, :mod:`branchnet.tree.search.problem`); ``s_d(t, j) = 1`` when tasks t and
j share stage d. Task t's change in a tree trained with seed s (percent, its term of Δ_MTL) is
modelled as ::

    r_t = b_t + u[s, t] + sum_d sum_{j != t} W[t, d, j] s_d(t, j)
    W[t, d, j] = mu[d] + kappa[t, d] + sum_m alpha[m] x_m[d, t, j] + v[t, d, j]

with ``x_m = -(1 - A_m) / rms_m`` the negative dissimilarity of affinity measure m (RSA, FAFS,
TAG) in units of its root mean square over the pairs and stages (so that one coefficient scale
suits measures as different as RSA, whose dissimilarities are near 0.1, and TAG's, up to 2):
``mu`` what sharing stage d costs any task, ``kappa`` what it costs task t in particular,
``alpha`` how much each measure's dissimilarity explains, ``v`` what is left per pair. Every
term is linear in the coefficients ``theta = [b, u, mu, kappa, alpha, v]`` (the blocks of
:data:`BLOCKS`), so the model is a Bayesian linear regression
(:class:`~branchnet.learned.bayes.BlockBayesLinear`), and a tree's predicted Δ_MTL is
stage-additive::

    Δ(T) = mean_t b_t + mean_t u[s, t] - (1/N) sum_d sum_{g in P_d} sum_{i<j in g} C[d, i, j],
    C[d, i, j] = -(W[i, d, j] + W[j, d, i])

which is the ``learned`` group cost of :mod:`branchnet.tree.group_cost` over ``C``: the tree
searches optimise it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: The coefficient blocks in column order (see the module docstring).
BLOCKS = ("b", "u", "mu", "kappa", "alpha", "v")


@dataclass
class SharingDesign:
    """Columns and rows of the model for N tasks, D stages, the affinity measures and the seeds.

    Attributes:
        num_tasks, depth: N and D.
        measures: measure name -> (D, N, N) affinity ``A_m`` (the prior; may be empty).
        seeds: the training seeds with an offset column each (``u``), in column order.
    """

    num_tasks: int
    depth: int
    measures: Mapping[str, np.ndarray] = field(default_factory=dict)
    seeds: Sequence[int] = ()

    def __post_init__(self) -> None:
        n, d = self.num_tasks, self.depth
        self.measures = {k: np.asarray(v, dtype=np.float64) for k, v in self.measures.items()}
        for name, a in self.measures.items():
            if a.shape != (d, n, n):
                raise ValueError(f"affinity {name} has shape {a.shape}, not ({d}, {n}, {n})")
        self.seeds = [int(s) for s in self.seeds]
        # x_m[m, d, t, j] = -(1 - A_m[d, t, j]) / rms_m, zero on the diagonal
        x = np.stack([-(1.0 - a) for a in self.measures.values()]) if self.measures else np.zeros((0, d, n, n))
        x[:, :, np.arange(n), np.arange(n)] = 0.0
        off = ~np.eye(n, dtype=bool)
        for m in range(x.shape[0]):
            rms = float(np.sqrt(np.mean(x[m][:, off] ** 2))) if n > 1 else 0.0
            x[m] /= rms if rms > 0 else 1.0
        self.prior_x = x
        self.sizes = {"b": n, "u": len(self.seeds) * n, "mu": d, "kappa": n * d, "alpha": len(self.measures),
                      "v": n * d * (n - 1)}
        starts = np.cumsum([0] + [self.sizes[b] for b in BLOCKS])
        self.slices = {b: slice(int(starts[i]), int(starts[i + 1])) for i, b in enumerate(BLOCKS)}
        # v[t, d, j] for j != t, in (t, d, j) order
        t_idx, d_idx, j_idx = np.meshgrid(np.arange(n), np.arange(d), np.arange(n), indexing="ij")
        keep = t_idx != j_idx
        self._v_index = np.full((n, d, n), -1, dtype=np.int64)
        self._v_index[keep] = np.arange(int(keep.sum()))

    @property
    def num_coefficients(self) -> int:
        return self.slices["v"].stop

    def block_sizes(self) -> list[int]:
        return [self.sizes[b] for b in BLOCKS]

    def seed_index(self, seed: int | None) -> int | None:
        """The ``u`` row of ``seed``, or None for a seed without a column (an unseen seed)."""
        if seed is None or int(seed) not in self.seeds:
            return None
        return self.seeds.index(int(seed))

    # -- rows --------------------------------------------------------------------------

    @staticmethod
    def sharing(labels: np.ndarray) -> np.ndarray:
        """``s_d(t, j)`` of trees (K, D, N) -> (K, D, N, N) float, zero diagonal."""
        labels = np.asarray(labels)
        same = (labels[..., :, None] == labels[..., None, :]).astype(np.float64)
        n = labels.shape[-1]
        same[..., np.arange(n), np.arange(n)] = 0.0
        return same

    def task_rows(self, labels: np.ndarray, seeds: Sequence[int | None] | None = None) -> np.ndarray:
        """The design rows of trees (K, D, N) trained with ``seeds`` (K,) (None: an unseen seed,
        whose offset is left at its prior mean 0): (K, N, P), row [k, t] predicting ``r_t``."""
        labels = np.asarray(labels).reshape(-1, self.depth, self.num_tasks)
        k, n, d = labels.shape[0], self.num_tasks, self.depth
        s = self.sharing(labels)                       # (K, D, N, N) [k, d, t, j]
        partners = s.sum(axis=-1)                      # (K, D, N) [k, d, t]
        rows = np.zeros((k, n, self.num_coefficients))
        tasks = np.arange(n)
        rows[:, tasks, self.slices["b"].start + tasks] = 1.0
        if seeds is not None:
            for i, seed in enumerate(seeds):
                index = self.seed_index(seed)
                if index is not None:
                    rows[i, tasks, self.slices["u"].start + index * n + tasks] = 1.0
        rows[:, :, self.slices["mu"]] = partners.transpose(0, 2, 1)
        kappa = rows[:, :, self.slices["kappa"]].reshape(k, n, n, d)   # [k, t, t', d]
        kappa[:, tasks, tasks, :] = partners.transpose(0, 2, 1)
        rows[:, :, self.slices["kappa"]] = kappa.reshape(k, n, n * d)
        if self.prior_x.shape[0]:
            rows[:, :, self.slices["alpha"]] = np.einsum("mdtj,kdtj->ktm", self.prior_x, s)
        v = np.zeros((k, n, n, d, n))                  # [k, t, t', d, j]
        v[:, tasks, tasks] = s.transpose(0, 2, 1, 3)   # [k, t, d, j]
        keep = self._v_index >= 0
        rows[:, :, self.slices["v"]] = v[:, :, keep]
        return rows

    def delta_rows(self, labels: np.ndarray, seeds: Sequence[int | None] | None = None) -> np.ndarray:
        """(K, P): row k predicts the Δ_MTL of tree k (the mean of its task rows)."""
        return self.task_rows(labels, seeds).mean(axis=1)

    # -- coefficients -> pair weights and costs ------------------------------------------

    def pair_weights(self, theta: np.ndarray) -> np.ndarray:
        """``W[t, d, j]`` of coefficients (..., P) -> (..., N, D, N), zero where j == t."""
        theta = np.asarray(theta, dtype=np.float64)
        n, d = self.num_tasks, self.depth
        lead = theta.shape[:-1]
        w = np.zeros(lead + (n, d, n))
        w += theta[..., self.slices["mu"]][..., None, :, None]
        w += theta[..., self.slices["kappa"]].reshape(lead + (n, d))[..., None]
        if self.prior_x.shape[0]:
            w += np.einsum("...m,mdtj->...tdj", theta[..., self.slices["alpha"]], self.prior_x)
        keep = self._v_index >= 0
        v = np.zeros(lead + (n, d, n))
        v[..., keep] = theta[..., self.slices["v"]]
        w += v
        w[..., np.arange(n), :, np.arange(n)] = 0.0
        return w

    def pair_costs(self, theta: np.ndarray) -> np.ndarray:
        """``C[d, i, j] = -(W[i, d, j] + W[j, d, i])`` of coefficients (..., P) -> (..., D, N, N)."""
        w = self.pair_weights(theta)                   # (..., N, D, N) [i, d, j]
        c = -(w + np.swapaxes(w, -1, -3))              # [i, d, j] + [j, d, i]
        return np.moveaxis(c, -2, -3)                  # (..., D, N, N) [d, i, j]

    def intercept(self, theta: np.ndarray) -> np.ndarray:
        """``mean_t b_t`` of coefficients (..., P): the predicted Δ_MTL of the all-separate tree at an unseen seed."""
        return np.asarray(theta)[..., self.slices["b"]].mean(axis=-1)

    def prior_mean(self, alpha0: float) -> np.ndarray:
        """(P,) the prior mean: ``alpha[m] = alpha0 / M`` for every measure, 0 elsewhere, so that
        before any training the model ranks trees by the measures' mean pairwise dissimilarity."""
        mean = np.zeros(self.num_coefficients)
        if self.prior_x.shape[0]:
            mean[self.slices["alpha"]] = alpha0 / self.prior_x.shape[0]
        return mean

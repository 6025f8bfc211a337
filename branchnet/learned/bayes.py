"""Bayesian linear regression with a prior scale per block of coefficients and a noise scale
per group of rows, its hyperparameters chosen by the evidence (type-II maximum a posteriori).

The model (Bishop, "Pattern Recognition and Machine Learning", 2006, Sections 3.3 and 3.5;
Rasmussen & Williams, "Gaussian Processes for Machine Learning", 2006, Section 2.1 and 5.4)::

    y = X theta + e,   theta ~ N(m0, diag(s^2)),   e_i ~ N(0, sigma_{g(i)}^2)

``s`` is constant within each *block* of columns (``s_b``) and ``sigma`` within each *noise
group* of rows. Given the hyperparameters the posterior is Gaussian in closed form::

    Sigma = (diag(1 / s^2) + X^T R^-1 X)^-1,   m = Sigma (m0 / s^2 + X^T R^-1 y),   R = diag(sigma_g(i)^2)

and the evidence is ``y ~ N(X m0, K)``, ``K = sum_b s_b^2 X_b X_b^T + R``. The scales marked
to be learned maximise ``log p(y) + sum_h log N(log h; log h_0, tau^2)``: the log evidence plus
a weak log-normal prior around each scale's default (``tau`` = :attr:`hyper_sd`), which keeps
a scale from running off to 0 or infinity on a few rows. The gradient is analytic (R&W Eq.
5.9), the optimiser scipy's L-BFGS-B.

The estimator follows scikit-learn's contract (:class:`~sklearn.base.BaseEstimator`: the
constructor only stores its arguments, ``fit`` learns the trailing-underscore attributes,
``predict(X, return_std=True)`` as :class:`~sklearn.linear_model.BayesianRidge`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import linalg, optimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted

#: Bounds of a learned scale, as a factor of its default (the optimiser's box).
SCALE_RANGE = 1e3


class BlockBayesLinear(RegressorMixin, BaseEstimator):
    """Bayesian linear regression with per-block prior scales and per-group noise scales.

    Parameters:
        block_sizes: the number of columns of each block, in column order (their sum is P).
        prior_scales: the default prior sd ``s_b`` of each block (same units as the coefficients).
        learn_scales: whether each block's scale is learned from the evidence (else fixed).
        prior_mean: (P,) ``m0``, or None for zeros.
        noise_scales: the default noise sd of each noise group (units of y).
        learn_noise: whether the noise scales are learned.
        hyper_sd: ``tau``, the sd of the log-normal prior of each learned scale around its
            default (natural log units; 1.0 lets a scale move by a factor e at little cost).
        max_iter: iterations of L-BFGS-B for the scales.

    Attributes after :meth:`fit`:
        coef_ (P,): posterior mean; coef_cov_ (P, P): posterior covariance;
        scales_ (B,): the prior scales used; noise_ (G,): the noise scales used;
        log_evidence_: ``log p(y)`` at those scales; n_rows_: the rows fitted.
    """

    def __init__(self, block_sizes: Sequence[int] = (1,), prior_scales: Sequence[float] = (1.0,),
                 learn_scales: Sequence[bool] | None = None, prior_mean: np.ndarray | None = None,
                 noise_scales: Sequence[float] = (1.0,), learn_noise: bool = True, hyper_sd: float = 1.0,
                 max_iter: int = 200) -> None:
        self.block_sizes = block_sizes
        self.prior_scales = prior_scales
        self.learn_scales = learn_scales
        self.prior_mean = prior_mean
        self.noise_scales = noise_scales
        self.learn_noise = learn_noise
        self.hyper_sd = hyper_sd
        self.max_iter = max_iter

    # -- set-up --------------------------------------------------------------------

    def _layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(block index of every column (P,), default scales (B,), learn mask (B,), prior mean (P,))."""
        sizes = np.asarray(self.block_sizes, dtype=np.int64)
        scales = np.asarray(self.prior_scales, dtype=np.float64)
        if sizes.ndim != 1 or scales.shape != sizes.shape or np.any(sizes < 0):
            raise ValueError("block_sizes and prior_scales need one non-negative size and one scale per block")
        if np.any(~np.isfinite(scales)) or np.any(scales <= 0):
            raise ValueError("prior scales must be positive and finite")
        learn = np.ones(len(sizes), bool) if self.learn_scales is None else np.asarray(self.learn_scales, bool)
        if learn.shape != sizes.shape:
            raise ValueError("learn_scales needs one flag per block")
        column_block = np.repeat(np.arange(len(sizes)), sizes)
        mean = np.zeros(int(sizes.sum())) if self.prior_mean is None else np.asarray(self.prior_mean, np.float64)
        if mean.shape != (int(sizes.sum()),):
            raise ValueError(f"prior_mean must have {int(sizes.sum())} entries, not {mean.shape}")
        return column_block, scales, learn, mean

    def _groups(self, groups: np.ndarray | None, n: int) -> np.ndarray:
        noise = np.asarray(self.noise_scales, dtype=np.float64)
        g = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64).reshape(-1)
        if g.shape != (n,) or (n and (g.min() < 0 or g.max() >= len(noise))):
            raise ValueError(f"noise groups must be {n} indices into the {len(noise)} noise scales")
        return g

    # -- evidence --------------------------------------------------------------------

    def _neg_objective(self, log_h: np.ndarray, parts: dict) -> tuple[float, np.ndarray]:
        """Minus (log evidence + log hyperprior) at log-scales ``log_h`` and its gradient."""
        blocks, groups, resid = parts["grams"], parts["groups"], parts["resid"]
        nb = len(blocks)
        s2 = np.exp(2 * log_h[:nb])
        n2 = np.exp(2 * log_h[nb:])
        k = np.diag(n2[groups])
        for weight, gram in zip(s2, blocks):
            k += weight * gram
        try:
            factor = linalg.cho_factor(k, lower=True, check_finite=False)
        except linalg.LinAlgError:
            return 1e30, np.zeros_like(log_h)
        alpha = linalg.cho_solve(factor, resid, check_finite=False)
        k_inv = linalg.cho_solve(factor, np.eye(len(resid)), check_finite=False)
        log_det = 2 * np.log(np.diag(factor[0])).sum()
        evidence = -0.5 * resid @ alpha - 0.5 * log_det - 0.5 * len(resid) * np.log(2 * np.pi)
        inner = np.outer(alpha, alpha) - k_inv
        grad = np.empty_like(log_h)
        for b, (weight, gram) in enumerate(zip(s2, blocks)):
            grad[b] = weight * np.sum(inner * gram)  # 0.5 tr(inner dK), dK = 2 s^2 G
        diag = np.diag(inner)
        for g in range(len(n2)):
            grad[nb + g] = n2[g] * diag[groups == g].sum()
        shift = (log_h - parts["log_h0"]) / self.hyper_sd ** 2
        prior = -0.5 * np.sum(shift * (log_h - parts["log_h0"]))
        grad -= shift
        mask = parts["learn"]
        return -(evidence + prior), -(grad * mask)

    def log_evidence(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
                     scales: np.ndarray | None = None, noise: np.ndarray | None = None) -> float:
        """``log p(y | X)`` at the given (or default) scales: the Gaussian ``N(X m0, K)``."""
        column_block, default, _, mean = self._layout()
        scales = default if scales is None else np.asarray(scales, np.float64)
        noise = np.asarray(self.noise_scales, np.float64) if noise is None else np.asarray(noise, np.float64)
        X = np.asarray(X, np.float64)
        y = np.asarray(y, np.float64)
        g = self._groups(groups, len(y))
        k = (X * scales[column_block] ** 2) @ X.T + np.diag(noise[g] ** 2)
        resid = y - X @ mean
        sign, log_det = np.linalg.slogdet(k)
        return float(-0.5 * resid @ np.linalg.solve(k, resid) - 0.5 * log_det - 0.5 * len(y) * np.log(2 * np.pi))

    # -- fit and predict ---------------------------------------------------------------

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
            learn: bool = True, start: np.ndarray | None = None) -> "BlockBayesLinear":
        """Fit the posterior; with ``learn`` choose the learned scales first (``start``: initial
        log-scales, blocks then noise groups, e.g. a previous fit's, to warm-start).

        ``X`` is (n, P), ``y`` (n,), ``groups`` (n,) noise-group indices (None: all group 0).
        With no rows (n = 0) the posterior is the prior.
        """
        column_block, default, learn_blocks, mean = self._layout()
        X = check_array(X, ensure_min_samples=0, dtype=np.float64) if len(X) else np.zeros((0, len(mean)))
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if X.shape != (len(y), len(mean)):
            raise ValueError(f"X must be ({len(y)}, {len(mean)}), not {X.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y holds NaN or Inf")
        g = self._groups(groups, len(y))
        noise0 = np.asarray(self.noise_scales, dtype=np.float64)
        log_h0 = np.log(np.r_[default, noise0])
        log_h = log_h0.copy() if start is None else np.asarray(start, np.float64).copy()
        nb = len(default)
        if learn and len(y):
            mask = np.r_[learn_blocks, np.full(len(noise0), bool(self.learn_noise))].astype(np.float64)
            # a noise group without rows, or a block without a non-zero column, has nothing to learn from
            for b in range(nb):
                cols = column_block == b
                if not np.any(X[:, cols]):
                    mask[b] = 0.0
            for j in range(len(noise0)):
                if not np.any(g == j):
                    mask[nb + j] = 0.0
            if mask.any():
                parts = {"grams": [X[:, column_block == b] @ X[:, column_block == b].T for b in range(nb)],
                         "groups": g, "resid": y - X @ mean, "log_h0": log_h0, "learn": mask}
                low = np.where(mask > 0, log_h0 - np.log(SCALE_RANGE), log_h0)
                high = np.where(mask > 0, log_h0 + np.log(SCALE_RANGE), log_h0)
                first = np.clip(np.where(mask > 0, log_h, log_h0), low, high)
                result = optimize.minimize(self._neg_objective, first, args=(parts,), jac=True, method="L-BFGS-B",
                                           bounds=list(zip(low, high)), options={"maxiter": int(self.max_iter)})
                log_h = np.where(mask > 0, result.x, log_h0)
        self.log_scales_ = log_h
        self.scales_ = np.exp(log_h[:nb])
        self.noise_ = np.exp(log_h[nb:])
        self._posterior(X, y, g, column_block, mean)
        self.log_evidence_ = self.log_evidence(X, y, g, self.scales_, self.noise_) if len(y) else 0.0
        self.n_rows_ = len(y)
        return self

    def _posterior(self, X: np.ndarray, y: np.ndarray, g: np.ndarray, column_block: np.ndarray,
                   mean: np.ndarray) -> None:
        prior_var = self.scales_[column_block] ** 2
        weights = 1.0 / self.noise_[g] ** 2 if len(y) else np.zeros(0)
        precision = np.diag(1.0 / prior_var) + (X.T * weights) @ X
        factor = linalg.cho_factor(precision, lower=True, check_finite=False)
        self.coef_cov_ = linalg.cho_solve(factor, np.eye(len(mean)), check_finite=False)
        self.coef_cov_ = (self.coef_cov_ + self.coef_cov_.T) / 2
        self.coef_ = linalg.cho_solve(factor, mean / prior_var + X.T @ (weights * y), check_finite=False)

    def refit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "BlockBayesLinear":
        """The posterior on other rows at this fit's scales (no scale is learned): a copy."""
        check_is_fitted(self, "coef_")
        twin = BlockBayesLinear(self.block_sizes, self.scales_, [False] * len(self.scales_), self.prior_mean,
                                self.noise_, False, self.hyper_sd, self.max_iter)
        return twin.fit(X, y, groups, learn=False)

    def predict(self, X: np.ndarray, return_std: bool = False, groups: np.ndarray | None = None,
                noise: bool = False):
        """Posterior mean of ``X theta`` (n,); with ``return_std`` also its sd, which with
        ``noise`` includes the noise of group ``groups`` (a new measurement's spread)."""
        check_is_fitted(self, "coef_")
        X = np.asarray(X, dtype=np.float64)
        mean = X @ self.coef_
        if not return_std:
            return mean
        var = np.einsum("ij,jk,ik->i", X, self.coef_cov_, X)
        if noise:
            var = var + self.noise_[self._groups(groups, len(X))] ** 2
        return mean, np.sqrt(np.maximum(var, 0.0))

    def sample_coef(self, rng: np.random.Generator, size: int = 1) -> np.ndarray:
        """``size`` draws of theta from the posterior, (size, P)."""
        check_is_fitted(self, "coef_")
        root = _psd_root(self.coef_cov_)
        return self.coef_ + rng.standard_normal((size, len(self.coef_))) @ root.T


def _psd_root(cov: np.ndarray) -> np.ndarray:
    """A matrix L with ``L L^T = cov`` (Cholesky, with a tiny jitter if rounding made it singular)."""
    jitter = 0.0
    scale = float(np.mean(np.diag(cov))) or 1.0
    for _ in range(6):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter = scale * 1e-12 if jitter == 0.0 else jitter * 100
    values, vectors = np.linalg.eigh(cov)
    return vectors * np.sqrt(np.maximum(values, 0.0))

"""The RSA definitions computed directly (numpy/scipy), for the tests to compare against."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def adaptive_pool(x: np.ndarray, size: int) -> np.ndarray:
    """Adaptive average pooling of (K, C, H, W) to (K, C, size, size): bin i spans
    [floor(i H / S), ceil((i + 1) H / S)) (torch's definition)."""
    k, c, h, w = x.shape
    out = np.empty((k, c, size, size))
    for i in range(size):
        h0, h1 = (i * h) // size, -(-((i + 1) * h) // size)
        for j in range(size):
            w0, w1 = (j * w) // size, -(-((j + 1) * w) // size)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def flat(entry, pool: int | None = None) -> np.ndarray:
    """(K, F) float64: pooled (4-D maps only) and flattened; lists concatenated."""
    if isinstance(entry, (list, tuple)):
        return np.concatenate([flat(part, pool) for part in entry], axis=1)
    x = np.asarray(entry, dtype=np.float64)
    if pool is not None and x.ndim == 4:
        x = adaptive_pool(x, pool)
    return x.reshape(len(x), -1)


def rdm(entry, center: str = "images", pool: int | None = None) -> np.ndarray:
    """``1 - np.corrcoef`` of the flattened features (features centred over images first if asked)."""
    x = flat(entry, pool)
    if center == "features":
        x = x - x.mean(axis=0)
    return 1.0 - np.corrcoef(x)


def affinity(rdms: np.ndarray) -> np.ndarray:
    """(D, N, N) Spearman between tasks' RDMs (N, D, K, K) on ``np.triu_indices(K, 1)``."""
    n, d, k, _ = rdms.shape
    iu = np.triu_indices(k, 1)
    out = np.ones((d, n, n))
    for loc in range(d):
        for i in range(n):
            for j in range(n):
                if i != j:
                    out[loc, i, j] = spearmanr(rdms[i, loc][iu], rdms[j, loc][iu]).statistic
    return out


def resampled_affinity(rdms: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Affinity of one resample: expand the RDMs, drop pairs of identical images, Spearman."""
    n, d, k, _ = rdms.shape
    sample = np.asarray(sample)
    p, q = np.triu_indices(len(sample), 1)
    keep = sample[p] != sample[q]
    rows, cols = sample[p[keep]], sample[q[keep]]
    out = np.ones((d, n, n))
    for loc in range(d):
        for i in range(n):
            for j in range(n):
                if i != j:
                    out[loc, i, j] = spearmanr(rdms[i, loc][rows, cols], rdms[j, loc][rows, cols]).statistic
    return out


def structured_features(rng: np.random.Generator, k: int, shapes: dict[str, object], tasks: list[str],
                        shared: float = 1.0) -> dict[str, dict[str, object]]:
    """Features with a shared latent image structure (so affinities are not all ~0).

    ``shapes[location]`` is a shape tuple (without K) or a list of them (HRNet-style).
    """
    latent = rng.standard_normal((k, 3))

    def make(shape) -> np.ndarray:
        size = int(np.prod(shape))
        mix = latent @ rng.standard_normal((3, size)) * shared
        return (mix + rng.standard_normal((k, size))).reshape((k,) + tuple(shape))

    return {t: {loc: [make(s) for s in shape] if isinstance(shape, list) else make(shape)
                for loc, shape in shapes.items()} for t in tasks}


def test_reference_pool_is_torch_adaptive_average_pool():
    import torch

    x = np.random.default_rng(0).standard_normal((2, 3, 7, 5))
    for size in (1, 2, 3, 4, 7):
        expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), size).numpy()
        np.testing.assert_allclose(adaptive_pool(x, size), expected, atol=1e-12)


def test_reference_resample_without_repeats_is_the_plain_affinity():
    rng = np.random.default_rng(1)
    rdms = rng.random((3, 2, 6, 6))
    rdms = (rdms + rdms.transpose(0, 1, 3, 2)) / 2
    np.testing.assert_allclose(resampled_affinity(rdms, np.arange(6)), affinity(rdms), atol=1e-12)

"""Affinity between tasks' RDMs and its bootstrap, against scipy.stats.spearmanr."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from branchnet.errors import BadInput
from branchnet.rsa import (ArrayFeatureSource, affinity_to_data, bootstrap_affinity, compute_affinity,
                           rdm_affinity, resampled_affinity)
from test_rsa_reference import affinity as reference_affinity
from test_rsa_reference import rdm as reference_rdm
from test_rsa_reference import resampled_affinity as reference_resampled
from test_rsa_reference import structured_features

TOL = 1e-5


def random_rdms(rng, n=4, d=3, k=9, decimals=None):
    """Symmetric RDM-like matrices (N, D, K, K) with zero diagonals, related across tasks."""
    base = rng.random((1, d, k, k))
    rdms = 0.6 * base + 0.4 * rng.random((n, d, k, k))
    rdms = rdms + rdms.transpose(0, 1, 3, 2)
    if decimals is not None:
        rdms = np.round(rdms, decimals)  # many ties
    for t in range(n):
        for loc in range(d):
            np.fill_diagonal(rdms[t, loc], 0.0)
    return rdms


@pytest.mark.parametrize("decimals", [None, 1])
def test_rdm_affinity_is_spearman_on_the_strict_upper_triangle(decimals):
    rdms = random_rdms(np.random.default_rng(0), decimals=decimals)
    got = rdm_affinity(rdms)
    np.testing.assert_allclose(got, reference_affinity(rdms), atol=1e-12)
    np.testing.assert_array_equal(got, got.transpose(0, 2, 1))
    np.testing.assert_array_equal(np.diagonal(got, axis1=1, axis2=2), 1.0)


def test_diagonal_and_lower_triangle_are_not_used():
    rng = np.random.default_rng(1)
    rdms = random_rdms(rng, n=2, d=1, k=7)
    got = rdm_affinity(rdms)[0, 0, 1]
    iu, full = np.triu_indices(7, 1), np.triu_indices(7, 0)
    a, b = rdms[0, 0], rdms[1, 0]
    assert got == pytest.approx(spearmanr(a[iu], b[iu]).statistic, abs=1e-12)
    # Including the diagonal (or the whole matrix) gives another number in this case...
    assert abs(got - spearmanr(a[full], b[full]).statistic) > 0.05
    assert abs(got - spearmanr(a.ravel(), b.ravel()).statistic) > 0.05
    # ...and whatever sits on the diagonal and below it is ignored.
    scrambled = rdms.copy()
    low = np.tril_indices(7, 0)
    scrambled[0, 0][low] = rng.random(len(low[0]))
    scrambled[1, 0][low] = -rng.random(len(low[0]))
    assert rdm_affinity(scrambled)[0, 0, 1] == got


def test_constant_rdm_is_reported():
    rdms = random_rdms(np.random.default_rng(2), n=3, d=2, k=6)
    rdms[1, 1] = 1.0
    with pytest.raises(BadInput, match="task 'depth' at location 'layer2' is constant"):
        rdm_affinity(rdms, ["seg", "depth", "normals"], ["layer1", "layer2"])


@pytest.mark.parametrize("center", ["images", "features"])
@pytest.mark.parametrize("pool", [None, 2])
def test_compute_affinity_matches_the_definition(center, pool):
    rng = np.random.default_rng(3)
    shapes = {"l1": (24,), "l2": (3, 6, 6), "l3": [(2, 6, 6), (4, 3, 3)]}
    tasks = ["seg", "depth", "normals", "edges"]
    features = structured_features(rng, 30, shapes, tasks, shared=0.8)
    source = ArrayFeatureSource(features, batch_size=8)
    result = compute_affinity(source, center=center, pool=pool, keep_rdms=True, progress=False)
    rdms = np.stack([[reference_rdm(features[t][loc], center, pool) for loc in shapes] for t in tasks])
    np.testing.assert_allclose(result.rdms, rdms, atol=TOL)
    np.testing.assert_allclose(result.affinity, reference_affinity(rdms), atol=TOL)
    assert result.affinity.shape == (3, 4, 4) and result.tasks == tasks and result.locations == list(shapes)
    np.testing.assert_array_equal(result.affinity, result.affinity.transpose(0, 2, 1))
    np.testing.assert_array_equal(np.diagonal(result.affinity, axis1=1, axis2=2), 1.0)
    assert result.settings["center"] == center and result.settings["images"] == 30


def test_compute_affinity_first_k_images_and_streaming_modes(tmp_path):
    rng = np.random.default_rng(4)
    features = structured_features(rng, 20, {"a": (40,), "b": (2, 5, 5)}, ["x", "y", "z"])
    source = ArrayFeatureSource(features, batch_size=6)
    first = compute_affinity(source, images=12, progress=False, keep_rdms=True)
    rdms = np.stack([[reference_rdm(features[t][loc][:12]) for loc in ("a", "b")] for t in "xyz"])
    np.testing.assert_allclose(first.affinity, reference_affinity(rdms), atol=TOL)
    spilled = compute_affinity(source, images=12, progress=False, max_memory=500, spill_dir=tmp_path)
    np.testing.assert_allclose(spilled.affinity, first.affinity, atol=1e-6)


def test_resampled_affinity_equals_expanding_the_rdms():
    rng = np.random.default_rng(5)
    rdms = random_rdms(rng, n=3, d=2, k=8, decimals=2)
    for sample in (rng.integers(0, 8, 8), rng.integers(0, 8, 8), np.array([0, 0, 1, 2, 2, 2, 5, 7]),
                   rng.integers(0, 8, 13)):
        np.testing.assert_allclose(resampled_affinity(rdms, sample), reference_resampled(rdms, sample),
                                   atol=1e-12)


def test_bootstrap_is_the_spread_over_resamples():
    rng = np.random.default_rng(6)
    rdms = random_rdms(rng, n=3, d=2, k=10)
    std, low, high = bootstrap_affinity(rdms, 25, seed=7)
    samples = np.random.default_rng(7).integers(0, 10, size=(25, 10))
    values = np.stack([reference_resampled(rdms, s) for s in samples])
    np.testing.assert_allclose(std, values.std(axis=0, ddof=1), atol=1e-12)
    np.testing.assert_allclose(low, np.percentile(values, 2.5, axis=0), atol=1e-12)
    np.testing.assert_allclose(high, np.percentile(values, 97.5, axis=0), atol=1e-12)
    assert np.all(std[:, ~np.eye(3, dtype=bool)] > 0)
    assert np.all(low <= rdm_affinity(rdms) + 0.3) and np.all(low <= high)


def test_bootstrap_of_identical_tasks_has_no_spread():
    rdms = random_rdms(np.random.default_rng(8), n=1, d=2, k=12)
    rdms = np.repeat(rdms, 3, axis=0)
    std, low, high = bootstrap_affinity(rdms, 10, seed=0)
    np.testing.assert_allclose(std, 0.0, atol=1e-12)
    np.testing.assert_allclose(low, 1.0, atol=1e-12)
    np.testing.assert_allclose(high, 1.0, atol=1e-12)


def test_bootstrap_bad_arguments():
    rdms = random_rdms(np.random.default_rng(9), n=2, d=1, k=6)
    with pytest.raises(BadInput, match="at least 2"):
        bootstrap_affinity(rdms, 1)
    source = ArrayFeatureSource({"a": {"l": np.eye(6) + 1}, "b": {"l": np.eye(6) * 2}})
    with pytest.raises(BadInput, match="bootstrap"):
        compute_affinity(source, bootstrap=1, progress=False)


def test_compute_affinity_with_bootstrap_and_affinity_data():
    rng = np.random.default_rng(10)
    features = structured_features(rng, 16, {"a": (30,), "b": (20,)}, ["x", "y"])
    result = compute_affinity(ArrayFeatureSource(features), bootstrap=12, seed=3, progress=False,
                              keep_rdms=True)
    std, low, high = bootstrap_affinity(result.rdms.astype(np.float64), 12, seed=3)
    np.testing.assert_allclose(result.affinity_std, std, atol=1e-6)
    data = affinity_to_data(result, stage_params=[10, 20], head_params=[5, 6])
    assert data.tasks == ["x", "y"] and data.locations == ["a", "b"]
    assert set(data.extra) == {"affinity_low", "affinity_high"}
    assert data.rdms.dtype == np.float32 and data.rdms.shape == (2, 2, 16, 16)
    assert data.stage_params.dtype == np.int64


def test_average_ranks_is_scipy_rankdata():
    from scipy.stats import rankdata

    from branchnet.rsa.affinity import average_ranks

    rng = np.random.default_rng(11)
    for values in (rng.random(1000), np.round(rng.random(1000), 2), np.zeros(5), np.array([3.0]),
                   np.array([2.0, 1.0, 2.0, 1.0, 5.0])):
        np.testing.assert_array_equal(average_ranks(values), rankdata(values, method="average"))

"""The GPU path of RSA (branchnet.rsa.device, the "torch" backend) run on CPU tensors: equal to the
definition and to the numpy path, the same errors, nothing read back while features stream in;
and the CPU path's thread sizing (branchnet.machine)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

import branchnet.machine as cores
import branchnet.rsa.rdm as rdm_module
from branchnet.errors import BadInput
from branchnet.rsa import ArrayFeatureSource, compute_affinity, compute_rdms, rdm_affinity
from branchnet.rsa import device as on_device
from test_rsa import make_source
from test_rsa_affinity import random_rdms
from test_rsa_reference import affinity as reference_affinity
from test_rsa_reference import rdm as reference_rdm
from test_rsa_reference import structured_features

TOL = 1e-5


@pytest.mark.parametrize("center", ["images", "features"])
@pytest.mark.parametrize("pool", [None, 3])
def test_torch_rdms_match_the_definition_and_the_numpy_path(center, pool):
    source, features = make_source()
    for task in source.tasks:
        got = compute_rdms(source, task, center=center, pool=pool, backend="torch")
        numpy_path = compute_rdms(source, task, center=center, pool=pool, backend="numpy")
        np.testing.assert_allclose(got, numpy_path, atol=1e-6)
        for d, loc in enumerate(source.locations):
            np.testing.assert_allclose(got[d], reference_rdm(features[task][loc], center, pool), atol=TOL)
            np.testing.assert_array_equal(got[d], got[d].T)
            np.testing.assert_array_equal(np.diagonal(got[d]), 0.0)


def test_torch_path_keeps_precision_with_large_offsets_in_memory_and_spilled(tmp_path):
    rng = np.random.default_rng(3)
    x = 1e3 + 1e-1 * rng.standard_normal((12, 400))
    x[3] = 5e4 + 1e-2 * rng.standard_normal(400)  # the float64 fix-up of weak rows
    x = x.astype(np.float32)
    source = ArrayFeatureSource({"t": {"l": x}}, batch_size=5)
    for center in ("images", "features"):
        expected = reference_rdm(x, center)
        np.testing.assert_allclose(compute_rdms(source, "t", center=center, backend="torch")[0], expected, atol=TOL)
        spilled = compute_rdms(source, "t", center=center, backend="torch", max_memory=4 * 400 * 5,
                               spill_dir=tmp_path)
        np.testing.assert_allclose(spilled[0], expected, atol=TOL)
    assert list(tmp_path.iterdir()) == []


def test_torch_rdms_stay_on_the_device_as_float64():
    source, _ = make_source()
    rdms = rdm_module.rdms_on_device(source, "seg", backend="torch")
    assert isinstance(rdms, torch.Tensor) and rdms.dtype == torch.float64 and rdms.shape == (4, 23, 23)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_torch_path_names_the_image_with_nan_or_inf(value):
    x = np.random.default_rng(0).standard_normal((9, 4, 3, 3))
    x[6, 1, 2, 0] = value
    source = ArrayFeatureSource({"seg": {"layer1": x[:, :1], "layer2": x}}, batch_size=4)
    with pytest.raises(BadInput, match="NaN or Inf") as info:
        compute_rdms(source, "seg", backend="torch")
    assert "'layer2'" in str(info.value) and "image 6" in str(info.value)


def test_torch_path_constant_mean_image_and_too_large():
    x = np.random.default_rng(0).standard_normal((8, 30))
    x[5] = -3e5
    with pytest.raises(BadInput, match="image 5.*constant"):
        compute_rdms(ArrayFeatureSource({"t": {"l": x}}, batch_size=3), "t", backend="torch")
    x = np.random.default_rng(0).standard_normal((9, 30))
    x[8] = x[:8].mean(axis=0) + 0.5
    with pytest.raises(BadInput, match="image 8.*mean image"):
        compute_rdms(ArrayFeatureSource({"t": {"l": x}}), "t", center="features", backend="torch")
    x = np.random.default_rng(5).standard_normal((6, 300)).astype(np.float32)
    x[2] *= 3e37
    with pytest.raises(BadInput, match="too large"):
        compute_rdms(ArrayFeatureSource({"t": {"l": x}}), "t", backend="torch")


def test_the_numpy_backend_needs_the_cpu():
    source, _ = make_source()
    with pytest.raises(BadInput, match="backend"):
        compute_rdms(source, "seg", backend="cupy")
    with pytest.raises(BadInput, match="CPU only"):
        rdm_module.resolve_backend("numpy", torch.device("cuda"))


def test_streaming_reads_nothing_back(monkeypatch):
    """While batches are centred into blocks the torch path reads no value back to the host
    (on a GPU, a read would stall the pipeline of model forward and block updates)."""
    reads = {"inside": 0, "active": False}
    for name in ("item", "__float__", "__int__", "__bool__", "tolist", "cpu", "numpy"):
        real = getattr(torch.Tensor, name)

        def counting(self, *args, _real=real, **kwargs):
            if reads["active"] and sys._getframe(1).f_globals.get("__name__", "").startswith("branchnet"):
                reads["inside"] += 1
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counting)
    real_add = rdm_module._Block.add

    def add(self, x):
        reads["active"] = True
        try:
            real_add(self, x)
        finally:
            reads["active"] = False
    monkeypatch.setattr(rdm_module._Block, "add", add)
    source, _ = make_source()
    for center in ("images", "features"):
        compute_rdms(source, "seg", center=center, backend="torch")
    assert reads["inside"] == 0
    compute_rdms(source, "seg", backend="numpy")  # the counter works: the numpy path reads on the host
    assert reads["inside"] > 0


def test_device_ranks_are_scipy_rankdata():
    rng = np.random.default_rng(11)
    rows = [rng.random(1000), np.round(rng.random(1000), 2), np.zeros(1000), np.repeat([2.0, 1.0], 500)]
    got = on_device.average_ranks(torch.from_numpy(np.stack(rows)))
    for row, ranks in zip(rows, got):
        np.testing.assert_array_equal(ranks.numpy(), rankdata(row, method="average"))
    np.testing.assert_array_equal(on_device.average_ranks(torch.tensor([[3.0]])).numpy(), [[1.0]])


@pytest.mark.parametrize("decimals", [None, 1])
def test_device_affinity_is_spearman_and_equals_the_numpy_path(decimals):
    rdms = random_rdms(np.random.default_rng(0), decimals=decimals)
    got = rdm_affinity(torch.from_numpy(rdms))
    np.testing.assert_allclose(got, reference_affinity(rdms), atol=1e-12)
    np.testing.assert_allclose(got, rdm_affinity(rdms), atol=1e-12)
    np.testing.assert_array_equal(got, got.transpose(0, 2, 1))
    np.testing.assert_array_equal(np.diagonal(got, axis1=1, axis2=2), 1.0)
    rdms[1, 1] = 1.0
    with pytest.raises(BadInput, match="task 'depth' at location 'layer2' is constant"):
        rdm_affinity(torch.from_numpy(rdms), ["seg", "depth", "normals", "edges"], ["layer1", "layer2", "layer3"])


def test_compute_affinity_torch_equals_numpy_with_bootstrap_and_rdms():
    rng = np.random.default_rng(3)
    shapes = {"l1": (24,), "l2": (3, 6, 6), "l3": [(2, 6, 6), (4, 3, 3)]}
    features = structured_features(rng, 30, shapes, ["seg", "depth", "normals"], shared=0.8)
    source = ArrayFeatureSource(features, batch_size=8)
    kwargs = dict(pool=2, keep_rdms=True, bootstrap=5, progress=False)
    on_torch = compute_affinity(source, backend="torch", **kwargs)
    on_numpy = compute_affinity(source, **kwargs)
    assert on_torch.settings["backend"] == "torch" and on_numpy.settings["backend"] == "numpy"
    np.testing.assert_allclose(on_torch.affinity, on_numpy.affinity, atol=TOL)
    np.testing.assert_allclose(on_torch.rdms, on_numpy.rdms, atol=1e-6)
    np.testing.assert_allclose(on_torch.affinity_std, on_numpy.affinity_std, atol=TOL)


# ----------------------------------------------------------------------------- threads


def test_free_cores_counts_what_others_leave(monkeypatch):
    monkeypatch.delenv("BRANCHNET_THREADS", raising=False)
    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    for busy, free in ((0.0, 2), (0.4, 2), (1.0, 1), (1.7, 1), (6.0, 1), (None, 2)):
        monkeypatch.setattr(cores, "busy_elsewhere", lambda seconds=0.05, b=busy: b)
        assert cores.free_cores(refresh=True) == free, busy
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the user's limit holds
    monkeypatch.setattr(cores, "busy_elsewhere", lambda seconds=0.05: 0.0)
    assert cores.free_cores(refresh=True) == 1
    monkeypatch.setenv("BRANCHNET_THREADS", "3")
    assert cores.free_cores() == 3


def test_busy_elsewhere_reads_the_machine():
    busy = cores.busy_elsewhere(0.02)
    assert busy is None or 0.0 <= busy <= cores.usable_cores() + 0.5


def test_thread_limit_caps_torch_and_blas_and_restores():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    with cores.thread_limit(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
        calls = []
        rdm_module.parallel_rows(lambda lo, hi: calls.append((lo, hi)), 100)
        assert calls == [(0, 100)]  # one thread: no pool at all
    assert torch.get_num_threads() == before

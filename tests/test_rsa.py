"""RDMs (branchnet.rsa.rdm) and feature sources against the definition: 1 - np.corrcoef."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import branchnet.rsa.rdm as rdm_module
from branchnet.errors import BadInput
from branchnet.rsa import ArrayFeatureSource, NpzFeatureSource, compute_rdms, parse_pool, plan_passes
from test_rsa_reference import rdm as reference_rdm
from test_rsa_reference import structured_features

TOL = 1e-5

SHAPES = {
    "vector": (37,),
    "map": (3, 7, 5),
    "hrnet": [(2, 8, 8), (4, 4, 4), (3, 2, 2)],
    "tokens": (6, 5),
}


def make_source(k=23, batch_size=7, seed=0, tasks=("seg", "depth"), shapes=SHAPES, shared=1.0):
    rng = np.random.default_rng(seed)
    features = structured_features(rng, k, shapes, list(tasks), shared=shared)
    return ArrayFeatureSource(features, batch_size=batch_size), features


@pytest.mark.parametrize("center", ["images", "features"])
@pytest.mark.parametrize("pool", [None, 1, 3])
def test_rdms_match_the_definition(center, pool):
    source, features = make_source()
    for task in source.tasks:
        got = compute_rdms(source, task, center=center, pool=pool)
        assert got.shape == (4, 23, 23)
        for d, loc in enumerate(source.locations):
            expected = reference_rdm(features[task][loc], center, pool)
            np.testing.assert_allclose(got[d], expected, atol=TOL, err_msg=f"{task}/{loc}")
            np.testing.assert_array_equal(got[d], got[d].T)
            np.testing.assert_array_equal(np.diagonal(got[d]), 0.0)


def test_features_centring_differs_from_images_centring():
    # Guard against a test that cannot fail: the two definitions give different RDMs here.
    source, _ = make_source()
    a = compute_rdms(source, "seg", center="images")
    b = compute_rdms(source, "seg", center="features")
    assert np.abs(a - b).max() > 1e-2


def test_torch_tensors_and_float64_and_ints_are_accepted():
    source, features = make_source()
    as_torch = {t: {loc: [torch.from_numpy(p) for p in v] if isinstance(v, list) else torch.from_numpy(v)
                    for loc, v in locs.items()} for t, locs in features.items()}
    got = compute_rdms(ArrayFeatureSource(as_torch, batch_size=5), "seg")
    expected = compute_rdms(source, "seg")
    np.testing.assert_allclose(got, expected, atol=1e-6)
    ints = {"a": {"x": np.random.default_rng(2).integers(0, 9, (10, 12))}}
    np.testing.assert_allclose(compute_rdms(ArrayFeatureSource(ints), "a")[0],
                               reference_rdm(ints["a"]["x"]), atol=TOL)


def test_large_offsets_keep_precision():
    # Features with a large mean and a small spread (post-ReLU maps can look like this).
    rng = np.random.default_rng(3)
    x = 1e3 + 1e-1 * rng.standard_normal((12, 400))
    x[3] = 5e4 + 1e-2 * rng.standard_normal(400)  # spread 2e-7 of the mean: the float64 fallback
    source = ArrayFeatureSource({"t": {"l": x.astype(np.float32)}})
    for center in ("images", "features"):
        expected = reference_rdm(x.astype(np.float32), center)
        np.testing.assert_allclose(compute_rdms(source, "t", center=center)[0], expected, atol=TOL)


def test_first_k_images():
    source, features = make_source(k=23)
    got = compute_rdms(source, "depth", images=9)
    assert got.shape == (4, 9, 9)
    np.testing.assert_allclose(got[0], reference_rdm(features["depth"]["vector"][:9]), atol=TOL)


class CountingSource:
    """Wraps a source and records every ``batches`` call (task, locations)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.tasks, self.locations, self.num_images = inner.tasks, inner.locations, inner.num_images

    def batches(self, task, locations):
        self.calls.append((task, list(locations)))
        return self.inner.batches(task, locations)


def block_bytes(k, f):
    return k * f * 4


def test_streaming_passes_equal_in_memory_result(tmp_path, monkeypatch):
    inner, _ = make_source(k=23, batch_size=4)
    all_in_memory = compute_rdms(inner, "seg", max_memory=2**30)

    # One pass for the task when the D blocks fit.
    source = CountingSource(inner)
    compute_rdms(source, "seg", max_memory=2**30)
    assert source.calls == [("seg", [0, 1, 2, 3])]

    # Blocks that fit one at a time: one pass per location (after the probe).
    sizes = [block_bytes(23, f) for f in (37, 105, 128 + 64 + 12, 30)]
    source = CountingSource(inner)
    per_location = compute_rdms(source, "seg", max_memory=max(sizes))
    assert sorted(len(locs) for _, locs in source.calls[1:]) in ([1, 1, 1, 1], [1, 1, 2], [1, 1, 1, 2])
    assert {d for _, locs in source.calls[1:] for d in locs} == {0, 1, 2, 3}
    np.testing.assert_allclose(per_location, all_in_memory, atol=1e-6)

    # Blocks larger than max_memory: spilled to float32 files, Gram tile by tile.
    spilled_grams = []
    real = rdm_module.gram_from_file

    def spy(path, shape, rows, device, transform=None):
        assert path.parent == tmp_path and path.exists()
        spilled_grams.append((shape, rows))
        return real(path, shape, rows, device, transform)

    monkeypatch.setattr(rdm_module, "gram_from_file", spy)
    for center in ("images", "features"):
        source = CountingSource(inner)
        spilled = compute_rdms(source, "seg", center=center, max_memory=block_bytes(23, 37) // 3,
                               spill_dir=tmp_path)
        in_memory = compute_rdms(inner, "seg", center=center, max_memory=2**30)
        np.testing.assert_allclose(spilled, in_memory, atol=1e-6)
        assert len(source.calls) == 1  # spilled blocks need no extra pass
    assert len(spilled_grams) == 8 and all(rows < shape[0] for shape, rows in spilled_grams)
    assert list(tmp_path.iterdir()) == []  # spill files removed


def test_plan_passes_packs_blocks_that_fit():
    assert plan_passes([10, 10, 10], 100) == ([[0, 1, 2]], set())
    assert plan_passes([60, 30, 50, 200], 100) == ([[0, 1, 3], [2]], {3})
    assert plan_passes([200, 300], 100) == ([[0, 1]], {0, 1})


def test_parse_pool():
    assert parse_pool("none") is None and parse_pool(None) is None
    assert parse_pool("avg:8") == 8 and parse_pool("AVG: 3") == 3
    for bad in ("avg", "avg:0", "max:3", "avg:-2", "8", "avg:2.5"):
        with pytest.raises(BadInput, match="--pool"):
            parse_pool(bad)


# --------------------------------------------------------------------------- bad inputs

def test_too_few_images():
    source, _ = make_source(k=3)
    with pytest.raises(BadInput, match="at least K=4"):
        compute_rdms(source, "seg")
    source, _ = make_source(k=10)
    with pytest.raises(BadInput, match="more images than"):
        compute_rdms(source, "seg", images=11)


@pytest.mark.parametrize("value, message", [(np.nan, "NaN or Inf"), (np.inf, "NaN or Inf"),
                                            (-np.inf, "NaN or Inf")])
@pytest.mark.parametrize("center", ["images", "features"])
def test_nan_and_inf_name_task_location_image(value, message, center):
    x = np.random.default_rng(0).standard_normal((9, 4, 3, 3))
    x[6, 1, 2, 0] = value
    source = ArrayFeatureSource({"seg": {"layer1": x[:, :1], "layer2": x}}, batch_size=4)
    with pytest.raises(BadInput, match=message) as info:
        compute_rdms(source, "seg", center=center)
    assert "'seg'" in str(info.value) and "'layer2'" in str(info.value) and "image 6" in str(info.value)


@pytest.mark.parametrize("constant", [0.0, 0.1, -3e5])
def test_constant_image_names_task_location_image(constant):
    x = np.random.default_rng(0).standard_normal((8, 30))
    x[5] = constant
    source = ArrayFeatureSource({"normals": {"stem": x}}, batch_size=3)
    with pytest.raises(BadInput, match="constant") as info:
        compute_rdms(source, "normals")
    assert "'normals'" in str(info.value) and "'stem'" in str(info.value) and "image 5" in str(info.value)


def test_features_centring_undefined_for_the_mean_image():
    # x8 = mean(x0..x7) + 0.5: the mean over all 9 images is mean(x0..x7) + 0.5/9, so
    # x8 minus the feature means is a constant vector and its Pearson correlation undefined.
    x = np.random.default_rng(0).standard_normal((9, 30))
    x[8] = x[:8].mean(axis=0) + 0.5
    source = ArrayFeatureSource({"t": {"l": x}})
    with pytest.raises(BadInput, match="mean image") as info:
        compute_rdms(source, "t", center="features")
    assert "image 8" in str(info.value)
    compute_rdms(source, "t", center="images")  # defined with per-image centring


def test_shape_changing_between_images():
    def batches(task, locations):
        yield [np.zeros((2, 5)) + np.arange(5)]
        yield [np.ones((2, 6)) * np.arange(6)]

    source = type("S", (), {"tasks": ["t"], "locations": ["l"], "num_images": 4, "batches": staticmethod(batches)})
    with pytest.raises(BadInput, match="6 values for image 2 but 5"):
        compute_rdms(source, "t")


def test_source_ending_early():
    def batches(task, locations):
        yield [np.random.default_rng(0).standard_normal((3, 5))]

    source = type("S", (), {"tasks": ["t"], "locations": ["l"], "num_images": 6, "batches": staticmethod(batches)})
    with pytest.raises(BadInput, match="only 3 images"):
        compute_rdms(source, "t")


# --------------------------------------------------------------------------- features files

def write_features(path, features, compressed=False):
    arrays = {f"{t}/{loc}": v for t, locs in features.items() for loc, v in locs.items()}
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_source_streams_the_arrays(tmp_path, compressed):
    rng = np.random.default_rng(0)
    features = {"seg": {"l1": rng.standard_normal((11, 2, 3, 3)).astype(np.float32),
                        "l2": rng.standard_normal((11, 7))},
                "depth": {"l1": rng.integers(0, 5, (11, 2, 3, 3)).astype(np.int16),
                          "l2": rng.standard_normal((11, 7)).astype(">f8")}}
    path = write_features(tmp_path / "f.npz", features, compressed)
    source = NpzFeatureSource(path, batch_size=4)
    assert source.tasks == ["seg", "depth"] and source.locations == ["l1", "l2"] and source.num_images == 11
    for task in source.tasks:
        batches = list(source.batches(task, [1, 0]))
        assert [b[0].shape[0] for b in batches] == [4, 4, 3]
        np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), features[task]["l2"])
        np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), features[task]["l1"])
        np.testing.assert_allclose(compute_rdms(source, task)[1], reference_rdm(features[task]["l2"]), atol=TOL)


def test_npz_source_fortran_order(tmp_path):
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((9, 6)))
    path = write_features(tmp_path / "f.npz", {"a": {"b": x}})
    source = NpzFeatureSource(path, batch_size=4)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in source.batches("a", [0])]), x)


@pytest.mark.parametrize("arrays, message", [
    ({"seg": np.zeros((5, 3))}, "key 'seg' is not of the form 'task/location'"),
    ({"seg/l1/x": np.zeros((5, 3))}, "key 'seg/l1/x' is not of the form"),
    ({"seg/l1": np.zeros((5, 3)), "depth/l1": np.zeros((6, 3))}, "'depth/l1' covers K=6"),
    ({"seg/l1": np.zeros((5, 3)), "seg/l2": np.zeros((5, 3)), "depth/l1": np.zeros((5, 3))},
     "lacks key(s) depth/l2"),
    ({"seg/l1": np.array(["a", "b", "c", "d"])}, "dtype"),
    ({"seg/l1": np.zeros(5)}, "must be (K, ...)"),
])
def test_npz_source_rejects_bad_files(tmp_path, arrays, message):
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(BadInput) as info:
        NpzFeatureSource(tmp_path / "f.npz")
    assert message in str(info.value) and str(tmp_path / "f.npz") in str(info.value)


def test_npz_source_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        NpzFeatureSource(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not a readable .npz"):
        NpzFeatureSource(tmp_path / "bad.npz")


def test_large_offsets_keep_precision_when_spilled(tmp_path):
    rng = np.random.default_rng(4)
    x = (1e3 + 1e-1 * rng.standard_normal((12, 400))).astype(np.float32)
    x[[3, 7]] = (5e4 + 1e-2 * rng.standard_normal((2, 400))).astype(np.float32)
    source = ArrayFeatureSource({"t": {"l": x}}, batch_size=5)
    for center in ("images", "features"):
        got = compute_rdms(source, "t", center=center, max_memory=4 * 400 * 5, spill_dir=tmp_path)
        np.testing.assert_allclose(got[0], reference_rdm(x, center), atol=TOL)
    x[9] = 5e4  # constant: found by the same check
    with pytest.raises(BadInput, match="image 9"):
        compute_rdms(source, "t", max_memory=4 * 400 * 5, spill_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_values_too_large_for_float32():
    x = np.random.default_rng(5).standard_normal((6, 300)).astype(np.float32)
    x[2] *= 3e37
    with pytest.raises(BadInput, match="image 2.*too large"):
        compute_rdms(ArrayFeatureSource({"t": {"l": x}}), "t")


def test_workspace_reuses_memory_and_frees_idle_buffers():
    from branchnet.rsa.rdm import Workspace

    cpu = torch.device("cpu")
    space = Workspace()
    a = space.take((4, 5), cpu)
    pointer = a.data_ptr()
    space.give_back(a)
    b = space.take((3, 5), cpu)  # a smaller block reuses the idle buffer
    assert b.shape == (3, 5) and b.data_ptr() == pointer
    space.give_back(b)
    c = space.take((6, 5), cpu)  # nothing idle is large enough: idle buffers are dropped first
    assert c.shape == (6, 5) and space._idle == []

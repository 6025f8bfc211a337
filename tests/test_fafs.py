"""FAFS affinity against its definition, the affinity file's ``measure``, ``affinity --measure fafs``,
and per-image losses against scoring each image alone."""

import json

import numpy as np
import pytest
import torch

from branchnet.affinity import AffinityData, load_affinity, save_affinity
from branchnet.affinity.fafs import DEFAULT_LOCATIONS, fafs_affinity, fafs_matrix, save_losses
from branchnet.errors import BadInput
from conftest import assert_one_line_error


def direct_fafs(losses):
    """The definition, one image and one pair at a time."""
    n, k = losses.shape
    e = np.zeros((n, k))
    for t in range(n):
        mean = sum(losses[t]) / k
        for i in range(k):
            e[t, i] = 1.0 if losses[t, i] >= mean else 0.0
    a = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a[i, j] = sum(e[i, m] * e[j, m] + (1 - e[i, m]) * (1 - e[j, m]) for m in range(k)) / k
    return a


def test_fafs_is_its_definition():
    rng = np.random.default_rng(0)
    losses = rng.gamma(2.0, size=(5, 37))
    a = fafs_matrix(losses)
    np.testing.assert_allclose(a, direct_fafs(losses), atol=1e-12)
    assert np.array_equal(a, a.T) and np.all(np.diag(a) == 1.0) and a.min() >= 0 and a.max() <= 1
    # ties at the mean count as difficult: the middle image of (1, 2, 3) is difficult for both
    ties = np.array([[1.0, 2.0, 3.0, 2.0], [3.0, 2.0, 1.0, 2.0], [2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(fafs_matrix(ties), direct_fafs(ties))
    assert fafs_matrix(ties)[0, 1] == 0.5  # images 1 and 3 agree (both at the mean), 0 and 2 do not
    assert fafs_matrix(ties)[0, 2] == 0.75  # a constant task finds every image difficult


def test_fafs_affinity_file_and_measure(tmp_path):
    rng = np.random.default_rng(1)
    losses = {"seg": rng.random(20), "depth": rng.random(20), "normals": rng.random(20)}
    data = fafs_affinity(losses)
    assert data.measure == "fafs" and data.tasks == ["seg", "depth", "normals"]
    assert data.locations == list(DEFAULT_LOCATIONS) and data.affinity.shape == (4, 3, 3)
    assert all(np.array_equal(data.affinity[d], data.affinity[0]) for d in range(4))
    save_affinity(tmp_path / "f.npz", data)
    back = load_affinity(tmp_path / "f.npz")
    assert back.measure == "fafs" and back.stage_params is None
    np.testing.assert_array_equal(back.affinity, data.affinity)
    # a file written before the measure field reads as RSA; RSA's writer records it
    old = tmp_path / "old.npz"
    np.savez(old, affinity=data.affinity, tasks=np.array(data.tasks), locations=np.array(data.locations))
    assert load_affinity(old).measure == "rsa"
    from branchnet.rsa import affinity_to_data, compute_affinity
    from branchnet.rsa.sources import ArrayFeatureSource

    features = {t: {loc: rng.random((8, 6)).astype(np.float32) for loc in ("x", "y")} for t in ("a", "b")}
    result = compute_affinity(ArrayFeatureSource(features), progress=False)
    assert affinity_to_data(result).measure == "rsa"
    with pytest.raises(BadInput, match="same images"):
        fafs_affinity({"a": np.ones(5), "b": np.ones(6)})
    with pytest.raises(BadInput, match="NaN"):
        fafs_affinity({"a": np.array([1.0, np.nan, 2.0])})
    with pytest.raises(BadInput, match="measure"):
        AffinityData(data.affinity, data.tasks, data.locations, measure="").validate()


def test_affinity_measure_fafs_cli(cli, tmp_path):
    rng = np.random.default_rng(2)
    losses = {"seg": rng.random(30), "depth": rng.random(30), "edge": rng.random(30)}
    path = save_losses(tmp_path / "L.npz", losses)
    out = tmp_path / "A.npz"
    result = cli("affinity", "--measure", "fafs", "--losses", path, "--out", out, "--locations", "s1,s2,s3")
    assert result.code == 0, result.err
    data = load_affinity(out)
    assert data.measure == "fafs" and data.locations == ["s1", "s2", "s3"]
    np.testing.assert_allclose(data.affinity[2], direct_fafs(np.stack(list(losses.values()))), atol=1e-12)
    assert json.loads(out.with_suffix(".json").read_text())["measure"] == "fafs"
    # build reads it unchanged, with costs given on its command line
    tree = cli("build", "--affinity", out, "--params", "20", "--stage-params", "1,2,3", "--head-params", "1,1,1",
               "--json")
    assert tree.code == 0, tree.err
    assert json.loads(tree.out)["params"] <= 20
    assert_one_line_error(cli("affinity", "--losses", path, "--out", out), "--measure fafs")
    assert_one_line_error(cli("affinity", "--measure", "fafs", "--losses", path), "--out")
    assert_one_line_error(cli("affinity", "--measure", "fafs", "--out", out), "--losses")
    assert_one_line_error(cli("affinity", "--measure", "tag2", "--losses", path, "--out", out), "measure")
    np.savez(tmp_path / "bad.npz", seg=np.ones(4), depth=np.ones(5))
    assert_one_line_error(cli("affinity", "--measure", "fafs", "--losses", tmp_path / "bad.npz", "--out", out),
                          "same images")


class _Images(torch.utils.data.Dataset):
    def __init__(self, n=5, size=32):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.seg = torch.randint(0, 4, (n, size, size), generator=g)
        self.seg[0, :8] = 255  # ignored pixels
        self.depth = torch.rand(n, 1, size, size, generator=g) * 5
        self.depth[1, :, :16] = 0  # invalid depth

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], {"seg": self.seg[i], "depth": self.depth[i]}


class _TwoHeads(torch.nn.Module):
    """A small stand-in for a trained model: ``forward(x) -> {task: prediction}`` and ``tasks``
    (all per_image_losses uses); BatchNorm makes eval mode matter."""

    def __init__(self, tasks):
        super().__init__()
        self.tasks = tasks
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU())
        self.seg = torch.nn.Conv2d(6, 4, 1)
        self.depth = torch.nn.Conv2d(6, 1, 1)

    def forward(self, x):
        h = self.body(x)
        return {"seg": self.seg(h), "depth": self.depth(h)}


def test_per_image_losses_are_each_image_alone():
    from branchnet.affinity.losses import per_image_losses
    from branchnet.model_file import LoadedModel
    from branchnet.tasks import TaskSpec, make_task

    tasks = [make_task("seg", TaskSpec("segmentation", num_classes=4, ignore_index=255)),
             make_task("depth", TaskSpec("depth"))]
    torch.manual_seed(0)
    net = _TwoHeads(tasks)
    with torch.no_grad():  # running statistics away from the initial ones, so that eval mode matters
        net.body[1].running_mean.uniform_(-1, 1)
    net.train()
    data = _Images()
    loaded = LoadedModel(net, None, tasks, "single")
    for task in tasks:
        got = per_image_losses(loaded, task.name, data, batch_size=3)
        net.eval()
        with torch.no_grad():
            alone = [float(task.loss(net(data[i][0][None])[task.name].float(), data[i][1][task.name][None]))
                     for i in range(len(data))]
        net.train()
        assert got.dtype == np.float64 and got.shape == (len(data),)
        np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-7)
        assert net.training  # the mode is restored
    assert per_image_losses(net, "depth", data, images=4).shape == (4,)
    with pytest.raises(BadInput, match="not 'edge'"):
        per_image_losses(net, "edge", data)

"""``branchnet affinity --config``: RSA of the trained single-task models, against the definition."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import torch

from branchnet.affinity import load_affinity
from branchnet.model_file import load_model
from branchnet.config import load_config
from branchnet.data import build_dataset
from branchnet.steps.train_single import train_single
from conftest import assert_one_line_error


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache):
    """Three tiny single-task models (1 epoch) in a shared run directory."""
    from conftest import TINY_CONFIG

    root = tmp_path_factory.mktemp("affinity-runs")
    config_path = root / "tiny.yaml"
    config_path.write_text(TINY_CONFIG.format(root=data_cache, tasks="[seg, depth, count]")
                           .replace("epochs: 2", "epochs: 1"))
    runs = root / "runs"
    train_single(load_config(config_path), runs, quiet=True)
    return config_path, runs


def test_affinity_of_trained_models_matches_the_definition(cli, trained):
    config_path, runs = trained
    result = cli("affinity", "--config", config_path, "--runs", runs, "--save-rdms", "--device", "cpu")
    assert result.code == 0, result.err
    data = load_affinity(runs / "affinity.npz")
    assert data.tasks == ["seg", "depth", "count"]
    assert data.locations == ["layer1", "layer2", "layer3", "layer4"]
    assert data.backbone == "resnet18" and data.input_size == (32, 32)
    # the costs are those of the trained models
    metrics = {t: json.loads((runs / "single" / t / "metrics.json").read_text()) for t in data.tasks}
    assert data.stage_params.tolist() == metrics["seg"]["stage_params"]
    assert data.head_params.tolist() == [metrics[t]["head_params"][t] for t in data.tasks]
    # the RDMs are 1 - Pearson between the affinity split's images, the affinity Spearman of their triangles
    config = load_config(config_path)
    dataset = build_dataset(config, "affinity", tasks=[])
    assert dataset.split == "affinity"
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    k = len(dataset)
    assert data.rdms.shape == (3, 4, k, k)
    iu = np.triu_indices(k, 1)
    rdms = np.zeros((3, 4, k, k))
    for t, task in enumerate(data.tasks):
        model = load_model(runs / "single" / task / "model.pt").model.eval()
        with torch.no_grad():
            levels = model.forward_levels(images)
        for d in range(4):
            features = levels[d][0].reshape(k, -1).double().numpy()
            rdms[t, d] = 1.0 - np.corrcoef(features)
    np.testing.assert_allclose(data.rdms, rdms, atol=1e-5)
    for d in range(4):
        for i in range(3):
            for j in range(3):
                expected = scipy.stats.spearmanr(rdms[i, d][iu], rdms[j, d][iu]).statistic
                assert data.affinity[d, i, j] == pytest.approx(expected, abs=1e-5)
    assert (runs / "affinity.json").is_file() and (runs / "affinity.png").is_file()


def test_missing_single_task_models_are_named(cli, trained, tmp_path):
    config_path, _ = trained
    result = cli("affinity", "--config", config_path, "--runs", tmp_path / "empty")
    assert_one_line_error(result, "no single-task model for seg, depth, count", "branchnet train-single")
    assert not (tmp_path / "empty" / "affinity.npz").exists()


def test_fafs_of_trained_models_matches_the_definition(cli, trained):
    """FAFS from the run's models: each image's loss computed alone, then docs/design.md's formula."""
    config_path, runs = trained
    result = cli("affinity", "--config", config_path, "--runs", runs, "--measure", "fafs")
    assert result.code == 0, result.err
    data = load_affinity(runs / "affinity-fafs.npz")
    assert data.measure == "fafs" and data.tasks == ["seg", "depth", "count"]
    config = load_config(config_path)
    rsa_costs = load_affinity(runs / "affinity.npz") if (runs / "affinity.npz").exists() else None
    losses = {}
    for task in data.tasks:
        loaded = load_model(runs / "single" / task / "model.pt")
        dataset = build_dataset(config, "affinity", tasks=[task])
        values = []
        with torch.no_grad():
            for n in range(len(dataset)):
                image, targets = dataset[n]
                pred = loaded.model.eval()(image[None])[task]
                values.append(float(loaded.tasks[0].loss(pred, targets[task][None])))
        losses[task] = np.array(values)
    e = {t: (v >= v.mean()).astype(float) for t, v in losses.items()}
    for i, a in enumerate(data.tasks):
        for j, b in enumerate(data.tasks):
            expected = np.mean(e[a] * e[b] + (1 - e[a]) * (1 - e[b]))
            assert np.allclose(data.affinity[:, i, j], expected)
    assert data.stage_params is not None and len(data.head_params) == 3
    if rsa_costs is not None:
        assert np.array_equal(data.stage_params, rsa_costs.stage_params)

"""Contract tests, one per registry, run over every registered entry (as scikit-learn's
``check_estimator`` runs over every estimator): a plug-in that is registered is held to its
kind's contract without a test of its own. docs/architecture.md, "Plug-ins", lists the
registries; every test here is on tiny tensors.

* task types (``tasks.TASK_TYPES``): prediction and target shapes, a finite loss, fitting the
  prediction improves the main metric in its declared direction, and Δ_MTL has the sign of
  that improvement;
* heads (``nn.heads.HEADS``): the output shape at every output stride;
* loss weightings (``train.weighting.WEIGHTINGS``): finite positive weights, the state
  round-trips through a checkpoint, equal weights on 2 gloo ranks;
* optimisers and schedules (``train.optim.OPTIMIZERS``, ``SCHEDULES``), training hooks
  (``train.hooks.HOOKS``);
* dataset readers (``data.DATASETS``): a fixture sample has every declared task, each target
  in its type's convention;
* affinity measures (``steps.affinity.MEASURES``): symmetric, unit diagonal, the file round-trips.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import weighting_steps as steps

from branchnet.config import Config, DataConfig, ModelConfig, TrainConfig
from branchnet.data import DATASETS, dataset_class
from branchnet.nn.heads import HEADS, build_head
from branchnet.tasks import TASK_TYPES, TaskSpec, make_task, multi_task_delta
from branchnet.train.hooks import HOOKS, TrainingHook
from branchnet.train.optim import OPTIMIZERS, SCHEDULES, build_optimizer
from branchnet.train.weighting import WEIGHTINGS

ROOT = Path(__file__).resolve().parents[1]
SIZE = (12, 12)
BATCH = 8


# ------------------------------------------------------------------------------- task types


def _task(type_name: str):
    return make_task("t", TaskSpec(type_name, num_classes=6, ignore_index=255))


def _batch(task, generator: torch.Generator) -> torch.Tensor:
    return torch.stack([task.example_target(SIZE, generator) for _ in range(BATCH)])


def _metrics(task, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    metrics = task.new_metrics()
    metrics.update(pred.detach(), target)
    return metrics.compute()


@pytest.mark.parametrize("type_name", list(TASK_TYPES))
def test_task_type_contract(type_name):
    task = _task(type_name)
    generator = torch.Generator().manual_seed(0)
    target = _batch(task, generator)
    shape = (BATCH, task.out_channels, *SIZE) if task.dense else (BATCH, task.out_channels)
    pred = torch.randn(shape, generator=generator).requires_grad_(True)
    loss = task.loss(pred, target).detach()
    assert loss.shape == () and torch.isfinite(loss) and float(loss) >= 0
    before = _metrics(task, pred, target)
    assert task.main_metric in before and np.isfinite(before[task.main_metric])
    for _ in range(60):  # fit the prediction itself: sign-gradient steps on the loss
        pred.grad = None
        task.loss(pred, target).backward()
        with torch.no_grad():
            pred -= 0.1 * pred.grad.sign()
    assert float(task.loss(pred, target).detach()) < float(loss)
    after = _metrics(task, pred, target)
    better = after[task.main_metric] > before[task.main_metric]
    worse = after[task.main_metric] < before[task.main_metric]
    assert better if task.higher_is_better else worse, (before[task.main_metric], after[task.main_metric])
    gained = multi_task_delta({"t": after}, {"t": before}, [task])["delta_mtl"]
    lost = multi_task_delta({"t": before}, {"t": after}, [task])["delta_mtl"]
    assert gained > 0 > lost


# ------------------------------------------------------------------------------- heads

TINY_HEADS = ModelConfig(head_channels=8, aspp_rates=[1, 2], psp_bins=[1, 2], fcn_layers=3, fcn_widths=[8, 4])


@pytest.mark.parametrize("stride", [8, 16, 32])
@pytest.mark.parametrize("name", list(HEADS))
def test_head_contract(name, stride):
    """At output stride s the last stage is (B, C, H/s, W/s) (HRNet: one map per resolution); a dense
    head answers at the input size (B, out, H, W), an image-level head (B, out)."""
    size = (64, 96)
    dense = HEADS[name].dense
    task = make_task("t", TaskSpec("segmentation" if dense else "classification", num_classes=5))
    model = ModelConfig(**{**TINY_HEADS.__dict__, "heads": {"t": name}})
    for channels in ([6], [6, 4]):  # ResNet: one map; HRNet: maps at halving resolutions
        head = build_head(task, channels, model).eval()
        features = [torch.randn(2, c, size[0] // (stride * 2 ** i), size[1] // (stride * 2 ** i))
                    for i, c in enumerate(channels)]
        with torch.no_grad():
            out = head(features if len(features) > 1 else features[0], size)
        assert out.shape == ((2, 5, *size) if dense else (2, 5)), (name, stride, channels, out.shape)
        assert torch.isfinite(out).all()


def test_dense_and_image_heads_are_both_registered():
    assert any(kind.dense for kind in HEADS.values()) and any(not kind.dense for kind in HEADS.values())


# ------------------------------------------------------------------------------- weightings

@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_weighting_contract(name, tmp_path):
    torch.manual_seed(0)
    shared = torch.nn.Parameter(torch.randn(4, 3))
    weighting = steps.weighting(name, shared)
    for _ in range(2):
        steps.run(weighting, shared)
        weights = weighting.weights()
        assert set(weights) == set(steps.NAMES)
        assert all(np.isfinite(w) and w > 0 for w in weights.values()), weights
    path = tmp_path / "checkpoint.pt"
    torch.save({"weighting": weighting.state_dict()}, path)
    restored = steps.weighting(name, shared)
    restored.load_state_dict(torch.load(path, weights_only=True)["weighting"])
    assert restored.weights() == weighting.weights()


RANKS = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from branchnet import distributed
    sys.path.insert(0, sys.argv[2])
    import weighting_steps as steps

    def average(parameters):
        for p in parameters:
            if p.grad is not None:
                p.grad.copy_(distributed.all_reduce_mean(p.grad))

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = {}
    for name in steps.WEIGHTINGS:
        torch.manual_seed(0)
        shared = torch.nn.Parameter(torch.randn(4, 3))
        scheme = steps.weighting(name, shared)
        steps.run(scheme, shared, rank, steps=2, average=average, mean=distributed.all_reduce_mean)
        out[name] = scheme.weights()
    torch.save(out, sys.argv[1] + f"/rank{rank}.pt")
    dist.destroy_process_group()
""")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Every weighting run for 3 steps and an epoch end on 2 gloo ranks whose data differ."""
    out = tmp_path_factory.mktemp("ranks")
    script = out / "ranks.py"
    script.write_text(RANKS)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, str(script), str(out), str(ROOT / "tests")],
                              env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_weighting_is_equal_on_every_rank(name, two_ranks):
    assert two_ranks[0][name] == two_ranks[1][name]


# ------------------------------------------------------------------------------- optimisers, schedules, hooks


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_contract(name):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer([weight], TrainConfig(optimizer=name, lr=0.1))
    (weight ** 2).sum().backward()
    optimizer.step()
    assert torch.all(weight < 1)
    # parameter groups as optimizer_for builds them; float CPU tensors take the fused kernel
    groups = [{"params": [torch.nn.Parameter(torch.ones(2))]}, {"params": [weight], "weight_decay": 0.0}]
    assert build_optimizer(groups, TrainConfig(optimizer=name, lr=0.1)).defaults["fused"] is True


def test_the_fused_kernel_only_where_it_applies():
    from branchnet.train.optim import fused

    cpu = torch.nn.Parameter(torch.ones(2))
    assert fused([cpu]) and fused([{"params": [cpu]}])
    assert not fused([])
    assert not fused([cpu, torch.ones(2, device="meta")])  # two devices
    assert not fused([torch.ones(2, dtype=torch.int64)])


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_contract(name):
    factors = [SCHEDULES[name](p) for p in np.linspace(0, 1, 11)]
    assert factors[0] == 1.0 and all(0.0 <= f <= 1.0 for f in factors)
    assert all(a >= b for a, b in zip(factors, factors[1:]))  # never rises


@pytest.mark.parametrize("name", list(HOOKS))
def test_training_hook_contract(name):
    """A config that does not switch the hook on gets none; the factory returns hooks otherwise."""
    assert HOOKS[name](Config()) == []
    assert all(isinstance(h, TrainingHook) for h in HOOKS[name](Config()))


UNKNOWN = {
    "task type": lambda: make_task("x", TaskSpec("nonesuch")),
    "dataset": lambda: dataset_class("nonesuch"),
    **{r.kind: (lambda r=r: r.lookup("nonesuch")) for r in (HEADS, WEIGHTINGS, OPTIMIZERS, SCHEDULES, HOOKS)},
    "affinity measure": lambda: _measures().lookup("nonesuch"),
}


@pytest.mark.parametrize("kind", list(UNKNOWN))
def test_an_unknown_name_is_an_error_naming_the_valid_ones(kind):
    from branchnet.errors import BadInput

    with pytest.raises(BadInput, match=f"unknown {kind} 'nonesuch'.*; valid: "):
        UNKNOWN[kind]()


# ------------------------------------------------------------------------------- dataset readers


def _scenes(tmp_path, data_cache):
    return DataConfig(dataset="scenes", root=str(data_cache), image_size=[32, 32],
                      splits={"train": 48, "val": 16, "test": 16, "affinity": 12},
                      options={"max_objects": 3, "workers": 1}), "val"


def _cityscapes(tmp_path, data_cache):
    import test_datasets_cityscapes as fixture

    rng = np.random.default_rng(0)
    for split, cities in fixture.CITIES.items():
        for city, count in cities.items():
            for k in range(count):
                fixture.make_item(rng, tmp_path, split, city, k)
    return DataConfig(dataset="cityscapes", root=str(tmp_path), image_size=[fixture.H, fixture.W]), "val"


def _nyud(tmp_path, data_cache):
    import test_datasets_nyud as fixture

    fixture.write_nyud(tmp_path)
    return DataConfig(dataset="nyud", root=str(tmp_path), image_size=[fixture.H, fixture.W],
                      options={"affinity_holdout": 2}), "val"


def _celeba(tmp_path, data_cache):
    import test_datasets_celeba as fixture

    fixture.write_celeba(tmp_path, np.random.default_rng(2))
    return DataConfig(dataset="celeba", root=str(tmp_path), image_size=[64, 64],
                      options={"affinity_holdout": 3}), "val"


def _taskonomy(tmp_path, data_cache):
    import test_datasets_taskonomy as fixture

    fixture.write_taskonomy(tmp_path)
    return DataConfig(dataset="taskonomy", root=str(tmp_path), image_size=[fixture.S, fixture.S],
                      options={"affinity_holdout": 3}), "val"


def _multimnist(tmp_path, data_cache):
    import test_datasets_multimnist as fixture

    fixture.write_mnist_csv(tmp_path / "mnist_5k.csv.gz", *fixture.synthetic_items(np.random.default_rng(6), 200))
    return DataConfig(dataset="multimnist", root=str(tmp_path), image_size=[36, 36],
                      splits={"train": 40, "val": 12, "test": 12, "affinity": 8}), "val"


#: A tiny fixture of every registered dataset reader: (DataConfig, split). A reader without one fails
#: test_every_dataset_has_a_fixture.
FIXTURES = {"scenes": _scenes, "cityscapes": _cityscapes, "nyud": _nyud, "celeba": _celeba,
            "taskonomy": _taskonomy, "multimnist": _multimnist}


def test_every_dataset_has_a_fixture():
    assert set(FIXTURES) == set(DATASETS)


@pytest.mark.parametrize("name", list(DATASETS))
def test_dataset_reader_contract(name, tmp_path, data_cache):
    data, split = FIXTURES[name](tmp_path, data_cache)
    cls = dataset_class(name)
    declared = cls.available_tasks(data.options)
    dataset = cls(data, split, list(declared))
    image, targets = dataset[0]
    h, w = data.image_size
    assert image.shape == (3, h, w) and image.dtype == torch.float32
    assert set(targets) == set(declared)
    generator = torch.Generator().manual_seed(0)
    for task_name, spec in declared.items():
        example = make_task(task_name, spec).example_target((h, w), generator)
        assert (targets[task_name].shape, targets[task_name].dtype) == (example.shape, example.dtype), task_name


# ------------------------------------------------------------------------------- affinity measures


def _measures():
    from branchnet.steps.affinity import MEASURES

    return MEASURES


@pytest.mark.parametrize("name", ["rsa", "fafs", "tag"])
def test_the_three_measures_are_registered(name):
    assert name in _measures()


@pytest.mark.parametrize("name", list(_measures()))
def test_affinity_measure_contract(name, tmp_path):
    from branchnet.affinity import load_affinity, save_affinity

    measure = _measures()[name].measure
    assert measure.name == name
    tasks, locations = ["a", "b", "c"], ["l1", "l2"]
    evidence = np.random.default_rng(0).random(measure.evidence_shape(len(tasks), len(locations), 8)) + 0.1
    data = measure.from_evidence(evidence, tasks, locations)
    a = np.asarray(data.affinity)
    assert a.shape == (len(locations), len(tasks), len(tasks)) and data.measure == name
    assert np.allclose(a, a.transpose(0, 2, 1)) and np.allclose(np.diagonal(a, axis1=1, axis2=2), 1.0)
    assert np.all(a >= -1 - 1e-9) and np.all(a <= 1 + 1e-9)
    save_affinity(tmp_path / "a.npz", data)
    back = load_affinity(tmp_path / "a.npz")
    assert np.array_equal(back.affinity, a) and back.tasks == tasks and back.locations == locations
    assert back.measure == name

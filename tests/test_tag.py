"""TAG's lookahead affinity: against a direct computation (copy the model, take the SGD step on one
task's loss over stages <= d, evaluate every loss), the normalised file, 2 gloo ranks against 1,
the CLI and its bad input."""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import branchnet.train.engine as engine
from branchnet.affinity.file import load_affinity
from branchnet.affinity.tag import TagHook, lookahead_affinity, tag_affinity
from branchnet.atomic import load_checkpoint
from branchnet.config import ModelConfig, load_config
from branchnet.errors import BadInput
from branchnet.nn import BranchedNet
from branchnet.steps.affinity import tag_from_runs
from branchnet.tasks import TaskSpec, make_task
from branchnet.tree import shared_partitions
from conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["a", "b", "c"]


def tiny_tasks():
    return [make_task("a", TaskSpec("segmentation", num_classes=3)), make_task("b", TaskSpec("depth")),
            make_task("c", TaskSpec("normals"))]


def tiny_net(tasks) -> BranchedNet:
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet18", width=0.125, output_stride=8, head_channels=8)
    return BranchedNet(tasks, shared_partitions(NAMES, 4), config, (32, 32))


def tiny_batch(n: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = {"a": torch.randint(0, 3, (n, 32, 32), generator=g), "b": torch.rand(n, 1, 32, 32, generator=g) + 0.5,
         "c": torch.nn.functional.normalize(torch.randn(n, 3, 32, 32, generator=g), dim=1)}
    return x, y


def test_lookahead_equals_a_direct_computation_and_leaves_the_model_as_it_was():
    tasks = tiny_tasks()
    net = tiny_net(tasks).train()
    x, y = tiny_batch()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    lr = 0.05
    z = lookahead_affinity(net, tasks, x, y, lr)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())  # BN statistics included
    assert all(p.grad is None for p in net.parameters()) and torch.equal(rng, torch.get_rng_state())

    def losses(model):
        out = model(x)
        return torch.stack([t.loss(out[t.name].float(), y[t.name]) for t in tasks])

    direct = torch.empty_like(z)
    for i in range(len(tasks)):
        for d in range(4):
            model = copy.deepcopy(net)
            before = losses(model)
            stages = [p for e in range(d + 1) for p in model.nodes[model.node_key(e, 0)].parameters()]
            step = torch.optim.SGD(stages, lr=lr)
            before[i].backward()
            step.step()
            with torch.no_grad():
                after = losses(model)
            direct[d, i] = 1.0 - after.double() / before.detach().double()
    assert z.shape == (4, 3, 3) and z.dtype == torch.float64
    # float32 forward passes computed two ways: agreement to 1e-4 of the largest entry
    assert torch.allclose(z, direct, rtol=0, atol=1e-4 * float(direct.abs().max()))
    assert float(z.abs().max()) > 1e-3  # the lookahead does move the losses


def test_tag_affinity_is_the_symmetric_normalised_mean():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 5, 5))
    a = tag_affinity(z)
    off = ~np.eye(5, dtype=bool)
    for d in range(4):
        s = (z[d] + z[d].T) / 2
        assert np.allclose(a[d][off], (s / np.abs(s[off]).max())[off])
        assert np.allclose(np.diag(a[d]), 1.0) and np.allclose(a[d], a[d].T)
        assert np.isclose(np.abs(a[d][off]).max(), 1.0)
    with pytest.raises(BadInput, match="no effect"):
        tag_affinity(np.zeros((2, 3, 3)))
    with pytest.raises(BadInput, match="NaN"):
        tag_affinity(np.full((2, 3, 3), np.nan))


def test_the_hook_measures_every_nth_step_and_averages():
    tasks = tiny_tasks()
    net = tiny_net(tasks).train()
    hook = TagHook(every=3)
    x, y = tiny_batch(4)

    class Ctx:
        model, lr = net, 0.05

    zs = []
    for step in range(7):
        Ctx.step, Ctx.tasks = step, tasks
        hook.before_step(Ctx, x, y)
        if step % 3 == 0:
            zs.append(lookahead_affinity(net, tasks, x, y, 0.05, head_seed=step).numpy())
    assert hook.count == 3  # steps 0, 3, 6
    assert np.allclose(hook.mean(), np.mean(zs, axis=0))
    restored = TagHook(every=3)
    restored.load_state_dict(hook.state_dict())
    restored.on_fit_start(type("C", (), {"device": torch.device("cpu")}))
    assert restored.count == 3 and np.array_equal(restored.mean(), hook.mean())


def _rank_z(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tasks = tiny_tasks()
        net = tiny_net(tasks).eval()  # BatchNorm from running statistics: a per-image network
        x, y = tiny_batch(8)
        part = slice(rank * 8 // world, (rank + 1) * 8 // world)
        z = lookahead_affinity(net, tasks, x[part], {k: v[part] for k, v in y.items()}, 0.5)
        torch.save(z, f"{out}/z{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_give_the_affinity_of_one_process_on_the_same_global_batch(tmp_path):
    """Each rank holds half of the 8 images; gradients and losses are averaged over the ranks,
    which for per-image losses of equal counts is the mean over the global batch. BatchNorm runs
    from its running statistics here (in training mode each rank would normalise with its own
    half-batch, as DDP training does). Tolerance: Z = 1 - L'/L of float32 losses near 1, summed
    in another order on two ranks: 1e-6 absolute (about 16 float32 steps at 1.0), against
    entries up to 1e-2."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_z, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    tasks = tiny_tasks()
    x, y = tiny_batch(8)
    single = lookahead_affinity(tiny_net(tasks).eval(), tasks, x, y, 0.5)
    z0, z1 = torch.load(tmp_path / "z0.pt"), torch.load(tmp_path / "z1.pt")
    assert torch.equal(z0, z1)  # every rank holds the same Z
    assert float(single.abs().max()) > 1e-3
    assert torch.allclose(z0, single, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ the command


def test_affinity_measure_tag_trains_the_shared_network_and_writes_an_ordinary_file(cli, tiny_config, tmp_path,
                                                                                  monkeypatch):
    config = tiny_config(["seg", "depth", "normals"])
    runs = tmp_path / "runs"
    done = cli("affinity", "--config", config, "--runs", runs, "--measure", "tag", "--set", "affinity.tag_every=2")
    assert done.code == 0, done.err
    data = load_affinity(runs / "affinity-tag.npz")
    assert data.measure == "tag" and data.tasks == ["seg", "depth", "normals"] and data.affinity.shape == (4, 3, 3)
    metrics = json.loads((runs / "tag" / "metrics.json").read_text())
    assert metrics["tag"]["steps"] == 3  # 2 epochs of 3 steps: steps 0, 2, 4
    z = np.asarray(metrics["tag"]["z"])
    assert np.array_equal(data.extra["tag_z"], z) and int(data.extra["tag_steps"]) == 3
    assert np.allclose(data.affinity, tag_affinity(z))
    assert list(data.stage_params) == metrics["stage_params"]
    assert list(data.head_params) == [metrics["head_params"][t] for t in data.tasks]
    assert data.backbone == "resnet18" and data.input_size == (32, 32)
    # the same settings again: the network is reused, the file rewritten the same
    stamp = (runs / "tag" / "model.pt").stat().st_mtime_ns
    again = cli("affinity", "--config", config, "--runs", runs, "--measure", "tag", "--set", "affinity.tag_every=2")
    assert again.code == 0 and (runs / "tag" / "model.pt").stat().st_mtime_ns == stamp
    assert np.array_equal(load_affinity(runs / "affinity-tag.npz").affinity, data.affinity)
    # another interval is another network: refused without --force
    other = cli("affinity", "--config", config, "--runs", runs, "--measure", "tag", "--set", "affinity.tag_every=3")
    assert_one_line_error(other, "affinity.tag_every 2 -> 3", "--force")
    # build takes it like any affinity file
    built = cli("build", "--affinity", runs / "affinity-tag.npz", "--out", tmp_path / "tree.json", "--params", "1G")
    assert built.code == 0, built.err

    # killed after epoch 1, then --resume: the same Z as the uninterrupted run
    real_save = engine.atomic_torch_save

    def save_then_die(path, obj):
        real_save(path, obj)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        tag_from_runs(load_config(config, sets=["affinity.tag_every=2"]), tmp_path / "killed", quiet=True)
    monkeypatch.setattr(engine, "atomic_torch_save", real_save)
    assert load_checkpoint(tmp_path / "killed" / "tag" / "checkpoint.pt")["hooks"]["tag"]["count"] == 2
    resumed = cli("affinity", "--config", config, "--runs", tmp_path / "killed", "--measure", "tag",
                  "--set", "affinity.tag_every=2", "--resume")
    assert resumed.code == 0, resumed.err
    again = json.loads((tmp_path / "killed" / "tag" / "metrics.json").read_text())
    assert again["tag"] == metrics["tag"] and again["val"] == metrics["val"]


@pytest.mark.parametrize("args, fragments", [
    (["--set", "affinity.tag_every=0"], ["affinity.tag_every", "positive"]),
    (["--images", "8"], ["--images", "not a setting of --measure tag"]),
    (["--resume", "--measure", "rsa"], ["--resume", "--measure tag"]),
])
def test_bad_tag_input_is_one_line(cli, tiny_config, tmp_path, args, fragments):
    base = ["affinity", "--config", tiny_config(["seg", "depth"]), "--runs", tmp_path / "runs"]
    if "--measure" not in args:
        base += ["--measure", "tag"]
    assert_one_line_error(cli(*base, *args), *fragments)
    assert not (tmp_path / "runs").exists()


def test_tag_with_a_single_task_is_one_line(cli, tiny_config, tmp_path):
    result = cli("affinity", "--config", tiny_config(["seg"]), "--runs", tmp_path / "runs", "--measure", "tag")
    assert_one_line_error(result, "at least two tasks")
    assert not (tmp_path / "runs").exists()

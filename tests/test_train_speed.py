"""The training loop's speed settings on the CPU: loader settings (validated, automatic defaults,
persistent workers serving the same batches), the precision choice, and ``train.compile``'s
trial step and fallback (docs/performance.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import branchnet.train.acceleration as acceleration
from branchnet.machine import thread_limit
from branchnet.config import load_config
from branchnet.data import build_dataset, build_tasks
from branchnet.errors import BadInput
from branchnet.nn import NUM_STAGES, BranchedNet
from branchnet.runs import training_settings
from branchnet.train import loaders
from branchnet.train.engine import fit
from branchnet.train.loaders import LoaderSettings, TrainLoader, make_loader
from branchnet.train.precision import Precision
from branchnet.tree import shared_partitions


# ------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("setting, fragment", [
    ("data.workers=-1", "data.workers"),
    ("data.loader.prefetch=0", "data.loader.prefetch"),
    ("data.loader.pin=true", "pin_memory"),  # did-you-mean
    ("train.amp=half", "train.amp"),
    ("train.compile=maybe", "train.compile"),
])
def test_bad_speed_settings_are_one_line_errors(tiny_config, setting, fragment):
    with pytest.raises(BadInput) as caught:
        load_config(tiny_config(["seg"]), sets=[setting])
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_speed_settings_are_not_part_of_what_is_trained(tiny_config):
    plain = load_config(tiny_config(["seg"]))
    fast = load_config(tiny_config(["seg"]), sets=["train.compile=true", "data.workers=3",
                                                   "data.loader.pin_memory=false", "data.loader.prefetch=4",
                                                   "data.loader.persistent=false"])
    assert fast.train.compile and fast.data.loader.prefetch == 4
    assert training_settings(fast) == training_settings(plain)
    # the precision is what is trained
    half = load_config(tiny_config(["seg"]), sets=["train.amp=float16"])
    assert half.train.amp == "float16" and training_settings(half) != training_settings(plain)


def test_automatic_loader_settings(monkeypatch):
    cpu = LoaderSettings.resolve(None, torch.device("cpu"))
    assert cpu == LoaderSettings(workers=0, pin_memory=False, prefetch=2, persistent=False)
    monkeypatch.setattr(loaders, "usable_cores", lambda: 16)
    cuda = torch.device("cuda")
    assert loaders.auto_workers(cuda) == loaders.MAX_AUTO_WORKERS
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four training processes share the 16 cores
    assert loaders.auto_workers(cuda) == 3
    settings = LoaderSettings.resolve(None, cuda)
    assert settings.workers == 3 and settings.persistent
    assert settings.pin_memory == torch.cuda.is_available()  # never pinned without a GPU to copy to
    monkeypatch.setattr(loaders, "usable_cores", lambda: 1)
    assert loaders.auto_workers(cuda) == 0


def test_precision_choice_off_cuda():
    for amp in (True, False, "bfloat16", "float16"):
        precision = Precision.for_device(torch.device("cpu"), amp)
        assert not precision.enabled and precision.name == "float32"


# ------------------------------------------------------------------------------- loaders


class Tagged(Dataset):
    """Item i of epoch e is (i, e, seed): shows which epoch the (worker's) copy was told."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch, self.seed = n, 0, 0

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        self.epoch = epoch
        self.seed = self.seed if seed is None else seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([i, self.epoch, self.seed]), {"t": torch.tensor(float(i))}


def test_persistent_workers_serve_the_batches_of_a_fresh_loader():
    dataset = Tagged(22)
    persistent = TrainLoader(dataset, 4, LoaderSettings(workers=1, persistent=True, prefetch=2), seed=5)
    assert len(persistent) == 5  # 22 images, batches of 4, the last incomplete one dropped
    try:
        for epoch in range(3):
            torch.manual_seed(epoch)
            got = [b[0] for b in persistent.epoch(epoch)]
            after_persistent = torch.rand(1)
            torch.manual_seed(epoch)
            want = [b[0] for b in make_loader(Tagged(22), 4, 0, train=True, seed=5, epoch=epoch)]
            after_fresh = torch.rand(1)
            assert len(got) == len(want) == 5
            for a, b in zip(got, want):
                assert torch.equal(a, b)  # same images, same order, that epoch's augmentation
            assert torch.equal(after_persistent, after_fresh)  # the same random numbers follow
    finally:
        persistent.close()


# ------------------------------------------------------------------------------- compile


class _Explode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("the backward compiler failed")


class _CompiledThenBroken(nn.Module):
    """Stands for a compiled network whose backward fails to compile, after a forward that
    drew random numbers and updated the BatchNorm statistics."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        torch.rand(7)
        return {k: _Explode.apply(v) for k, v in self.model(x).items()}


def _tiny_run(tiny_config, sets):
    config = load_config(tiny_config(["seg"]), sets=["train.epochs=1", *sets])
    tasks = build_tasks(config)
    torch.manual_seed(0)
    model = BranchedNet(tasks, shared_partitions(["seg"], NUM_STAGES), config.model, config.image_size)
    splits = [build_dataset(config, s, ["seg"]) for s in ("train", "val")]
    return model, tasks, config, splits


def test_a_failed_compilation_says_so_in_one_line_and_trains_as_without(tiny_config, tmp_path, monkeypatch, capfd):
    with thread_limit(1):  # two tiny trainings: one thread is as fast, and unhurt by a busy machine
        model, tasks, config, splits = _tiny_run(tiny_config, [])
        plain = fit(model, tasks, config, tmp_path / "plain", *splits, quiet=True)

        monkeypatch.setattr(acceleration.torch, "compile", lambda module, **kw: _CompiledThenBroken(module))
        monkeypatch.setenv("BRANCHNET_QUIET", "0")
        broken, tasks, config, splits = _tiny_run(tiny_config, ["train.compile=true"])
        capfd.readouterr()
        result = fit(broken, tasks, config, tmp_path / "broken", *splits, quiet=True, label="seg")
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "torch.compile failed" in err[0] and "the backward compiler failed" in err[0], err
    assert not result.compiled and not plain.compiled
    # the trial step left nothing behind: the same training, bit for bit
    assert result.history[0]["train_loss"] == plain.history[0]["train_loss"]
    for (name, a), b in zip(broken.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        return {"t": self.body(x)}


class _Task:
    name = "t"

    @staticmethod
    def loss(prediction, target):
        return ((prediction - target) ** 2).mean()


def test_compile_network_with_real_torch_compile(monkeypatch):
    torch.manual_seed(0)
    net = _Net()
    images, targets = torch.randn(4, 3, 8, 8), {"t": torch.randn(4, 2, 8, 8)}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()

    monkeypatch.setattr(acceleration, "COMPILE_OPTIONS", {"backend": "eager"})
    compiled, why = acceleration.compile_network(net, [_Task()], images, targets, Precision(False))
    assert why is None and compiled is not net
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # BatchNorm statistics put back
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    net.eval()
    with torch.no_grad():
        assert torch.equal(compiled(images)["t"], net(images)["t"])

    def no_compiler(graph, inputs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(acceleration, "COMPILE_OPTIONS", {"backend": no_compiler})
    fallback, why = acceleration.compile_network(_Net(), [_Task()], images, targets, Precision(False))
    assert isinstance(fallback, _Net) and "no C++ compiler here" in why and "\n" not in why

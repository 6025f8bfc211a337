"""Maximum Roaming: the update plan against the paper's Lemma 1, the masked forward against a
direct computation, p = 1 against the plain network, and a resumed run against an uninterrupted one."""

from __future__ import annotations

import copy
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

import branchnet.train.engine as engine
import branchnet.train.guard as guard
from branchnet.atomic import load_checkpoint
from branchnet.config import ModelConfig, RoamingConfig, load_config
from branchnet.data import build_dataset, build_tasks
from branchnet.nn import NUM_STAGES, BranchedNet
from branchnet.nn.masking import mask_points
from branchnet.tasks import TaskSpec, make_task
from branchnet.train.engine import fit
from branchnet.train.hooks import FitContext, TrainingHook
from branchnet.train.roaming import (Layer, RoamingHook, RoamingPlan, initial_masks, roaming_hooks, update_layer,
                                     update_period)
from branchnet.tree import shared_partitions

# ------------------------------------------------------------------ the plan (Definition 1, Lemma 1)


def run_plan(plan: RoamingPlan) -> list[list[int]]:
    """Run ``plan`` to its end, checking the invariants after every step; returns, per layer and task,
    the step at which the task had visited every filter."""
    counts = [m.sum(axis=0) for m in plan.used]
    finished = [[0 if v[:, t].all() else None for t in range(v.shape[1])] for v in plan.visited]
    while not plan.finished:
        plan.step()
        assert plan.steps < 10_000
        for i, (used, visited) in enumerate(zip(plan.used, plan.visited)):
            assert (used.sum(axis=0) == counts[i]).all()  # Lemma 1.3: each task's filter count is constant
            assert used.any(axis=1).all()  # Eq. 3: every filter is used by some task
            assert not (used & ~visited).any()  # A_t(c) is part of B_t(c)
            for t in range(used.shape[1]):
                if finished[i][t] is None and visited[:, t].all():
                    finished[i][t] = plan.steps
    return finished


@pytest.mark.parametrize("p, tasks", [(0.5, 2), (0.5, 5), (0.8, 3), (0.8, 5)])
def test_lemma_1_the_plan_ends_after_s_minus_a0_steps_and_visits_every_filter(p, tasks):
    layers = [Layer("s0_g0", 0, 64, tasks), Layer("s1_g0", 0, 24, tasks)]
    plan = RoamingPlan(layers, p, 1.0, seed=3)
    need = [layer.filters - used.sum(axis=0) for layer, used in zip(layers, plan.used)]
    finished = run_plan(plan)
    assert plan.swaps == [0, 0]  # shared filters abound at these p: Definition 1's exchange every time
    for i, layer in enumerate(layers):
        # Lemma 1.1: task t's plan ends after exactly S - |A_t(0)| update steps (one new filter each) ...
        assert finished[i] == need[i].tolist()
        assert plan.layer_steps[i] == plan.length[i] == need[i].max()
        # ... Lemma 1.2: and then every filter has been used by every task
        assert plan.visited[i].all()
    assert plan.steps == max(plan.length)


def test_lemma_1_in_expectation_and_in_epochs():
    """|A_t(0)| is Binomial(S, p) plus its share of the filters no task drew ((1-p)^T S / T), so the
    plan length S - |A_t(0)| averages (1-p) S - (1-p)^T S / T update steps: (1-p) S as the paper
    states it, less what the full-capacity constraint adds; each step lasts delta epochs."""
    rng = np.random.default_rng(0)
    s, tasks, p = 64, 3, 0.5
    lengths = np.concatenate([s - initial_masks(s, tasks, p, rng).sum(axis=0) for _ in range(2000)])
    expected = (1 - p) * s - (1 - p) ** tasks * s / tasks
    sigma = np.sqrt(s * p * (1 - p) / len(lengths))
    assert abs(lengths.mean() - expected) < 5 * sigma + 0.05
    # delta = 0.1 epochs at 30 steps per epoch: an update every 3 optimiser steps, exactly
    assert update_period(0.1, 30) == Fraction(3) and update_period(0.25, 10) == Fraction(5, 2)


def test_initial_partition_bernoulli_full_capacity_and_the_two_ends():
    rng = np.random.default_rng(1)
    masks = initial_masks(20_000, 3, 0.3, rng)
    assert masks.any(axis=1).all()
    share = (1 - 0.3) ** 3 / 3  # the uncovered filters go to one uniformly drawn task
    assert abs(masks.mean() - (0.3 + share)) < 5 * np.sqrt(0.25 / masks.size)
    assert (initial_masks(500, 4, 0.0, rng).sum(axis=1) == 1).all()  # p = 0: disjoint partitions
    assert initial_masks(500, 4, 1.0, rng).all()  # p = 1: every task uses every filter
    plan = RoamingPlan([Layer("s0_g0", 0, 16, 4)], 1.0)
    assert plan.finished and plan.length == [0]


def test_p_zero_stays_disjoint_and_still_roams():
    plan = RoamingPlan([Layer("s0_g0", 0, 40, 4)], 0.0, 1.0, seed=2)
    assert (plan.used[0].sum(axis=1) == 1).all()
    run_plan(plan)
    assert (plan.used[0].sum(axis=1) == 1).all()  # every update was a swap
    assert plan.visited[0].all() and plan.swaps[0] > 0


def test_a_release_never_leaves_a_filter_unused():
    """Two tasks that both hold filter 0 only: Definition 1's independent draws could release it
    twice; the sequential update keeps it (the second task must release another one)."""
    used = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [0, 0]], bool)
    used[3, 0] = used[4, 1] = True
    for seed in range(50):
        new, visited, updated, _ = update_layer(used, used.copy(), np.random.default_rng(seed))
        assert new.any(axis=1).all() and updated.all()
        assert (new.sum(axis=0) == used.sum(axis=0)).all()


def test_completion_stops_each_layer_after_its_share_of_the_plan():
    layers = [Layer("s0_g0", 0, 64, 3), Layer("s0_g0", 1, 16, 3)]
    plan = RoamingPlan(layers, 0.5, 0.5, seed=4)
    run_plan(plan)
    assert plan.layer_steps == [round(0.5 * n) for n in plan.length]
    assert not any(v.all() for v in plan.visited)


def test_the_plan_state_continues_exactly():
    layers = [Layer("s0_g0", 0, 32, 3)]
    straight = RoamingPlan(layers, 0.6, 1.0, seed=5)
    split = RoamingPlan(layers, 0.6, 1.0, seed=5)
    for _ in range(4):
        straight.step()
        split.step()
    state = split.state_dict()
    restored = RoamingPlan.from_state(state)
    run_plan(straight)
    run_plan(restored)
    assert restored.steps == straight.steps
    assert all((a == b).all() for a, b in zip(restored.used, straight.used))


# ------------------------------------------------------------------ the masked forward

TASKS = [make_task("a", TaskSpec("segmentation", num_classes=3)), make_task("b", TaskSpec("depth")),
         make_task("c", TaskSpec("depth"))]
TREE = [[["a", "b", "c"]], [["a", "b", "c"]], [["a", "b"], ["c"]], [["a"], ["b"], ["c"]]]
TINY = ModelConfig(backbone="resnet18", width=0.125, output_stride=8, head_channels=8)


def tiny_net(tree=TREE) -> BranchedNet:
    torch.manual_seed(0)
    return BranchedNet(TASKS, tree, TINY, (32, 32))


def random_masks(net: BranchedNet, p: float, seed: int, same: tuple[str, str] | None = None) -> dict:
    masks = net.channel_masks
    rng = np.random.default_rng(seed)
    drawn = {}
    for key, node in masks.nodes.items():
        for k in range(node.num_points):
            m = initial_masks(node.mask(k).shape[0], len(node.tasks), p, rng)
            if same and same[0] in node.tasks and same[1] in node.tasks:
                m[:, node.tasks.index(same[1])] = m[:, node.tasks.index(same[0])]
            masks.set_masks(key, k, m)
            drawn[key, k] = m
    masks.refresh()
    return drawn


def test_masked_forward_equals_a_network_per_task_with_its_channels_zeroed():
    """Direct computation: task t's network is a copy whose masked BatchNorms (or convolutions) have
    their weight and bias multiplied by t's mask, run plainly in training mode; its outputs and its
    BatchNorm statistics are what the masked forward gives task t."""
    net = tiny_net()
    reference = copy.deepcopy(net)
    net.enable_channel_masks()
    drawn = random_masks(net, 0.6, seed=0)
    x = torch.randn(4, 3, 32, 32)
    out = net.train()(x)
    for task in ("a", "b", "c"):
        own = copy.deepcopy(reference)
        for key, node in net.channel_masks.nodes.items():
            if task not in node.tasks:
                continue
            modules = dict(own.nodes[key].named_modules())
            for k, name in enumerate(node.point_names):
                m = torch.tensor(drawn[key, k][:, node.tasks.index(task)], dtype=torch.float32)
                with torch.no_grad():
                    module = modules[name]
                    module.weight.mul_(m.view(-1, *[1] * (module.weight.ndim - 1)))
                    if module.bias is not None:
                        module.bias.mul_(m)
        expected = own.train()(x)[task]
        assert torch.allclose(out[task], expected, atol=1e-5, rtol=1e-5)
        for key, node in net.channel_masks.nodes.items():
            if task not in node.tasks:
                continue
            modules = dict(own.nodes[key].named_modules())
            for k, name in enumerate(node.point_names):
                if node.is_bn[k]:
                    col = node.tasks.index(task)
                    assert torch.allclose(getattr(node, f"mean{k}")[col], modules[name].running_mean, atol=1e-6)
                    assert torch.allclose(getattr(node, f"var{k}")[col], modules[name].running_var, atol=1e-6)


def test_every_convolution_of_a_shared_node_is_masked_once():
    net = tiny_net()
    for key in ("s0_g0", "s1_g0", "s2_g0"):
        convs = [m for m in net.nodes[key].modules() if isinstance(m, torch.nn.Conv2d)]
        points = mask_points(net.nodes[key])
        assert len(points) == len(convs)
        assert [c for _, _, c in points] == [c.out_channels for c in convs]
    masks = net.enable_channel_masks()
    assert masks.keys == ["s0_g0", "s1_g0", "s2_g0"]  # the nodes shared by two or more tasks


def test_tasks_with_identical_masks_share_one_forward_pass():
    net = tiny_net()
    net.enable_channel_masks()
    random_masks(net, 0.5, seed=1, same=("a", "b"))
    calls = {}
    for key, node in net.nodes.items():
        node.register_forward_hook(lambda m, i, o, key=key: calls.__setitem__(key, calls.get(key, 0) + 1))
    net(torch.randn(2, 3, 32, 32))
    # a and b share every pass where their masks agree; c has its own; the unshared nodes run once
    assert calls == {"s0_g0": 2, "s1_g0": 2, "s2_g0": 1, "s2_g1": 1, "s3_g0": 1, "s3_g1": 1, "s3_g2": 1}
    assert net.channel_masks.forward_passes() == 9
    assert net.channel_masks.streams()[0] == [("s0_g0", ["a", "b"]), ("s0_g0", ["c"])]


def test_all_ones_masks_are_exactly_the_plain_network_outputs_and_gradients():
    plain, masked = tiny_net(), tiny_net()
    masks = masked.enable_channel_masks()
    hook = RoamingHook(RoamingConfig(p=1.0), seed=0)
    hook.on_fit_start(FitContext(model=masked, net=masked, tasks=TASKS, optimizer=None, device=torch.device("cpu"),
                                 epochs=1, steps_per_epoch=4, seed=0, precision=None))
    assert not masks.active and hook.plan.finished
    x = torch.randn(4, 3, 32, 32)
    for net in (plain, masked):
        out = net.train()(x)
        sum(o.square().mean() for o in out.values()).backward()
    a, b = plain(x), masked(x)
    assert all(torch.equal(a[t], b[t]) for t in a)
    for (name, p), q in zip(plain.named_parameters(), masked.parameters()):
        assert torch.equal(p.grad, q.grad), name
    state = masked.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in plain.state_dict().items())  # BatchNorm statistics too


def test_a_state_with_masks_loads_into_a_fresh_network():
    net = tiny_net()
    net.enable_channel_masks()
    random_masks(net, 0.5, seed=2)
    x = torch.randn(2, 3, 32, 32)
    net.train()(x)  # per-task statistics move
    fresh = tiny_net()
    fresh.load_state_dict(net.state_dict())
    assert fresh.channel_masks is not None and fresh.channel_masks.streams() == net.channel_masks.streams()
    a, b = net.eval()(x), fresh.eval()(x)
    assert all(torch.equal(a[t], b[t]) for t in a)


# ------------------------------------------------------------------ training with the hook


def tiny_run(tiny_config, sets, out, *, epochs=2, hooks=(), resume=False):
    config = load_config(tiny_config(["seg", "depth"], **{"train: 48": "train: 32"}),
                         overrides={"train.epochs": epochs}, sets=sets)
    tasks = build_tasks(config)
    torch.manual_seed(config.seed)
    model = BranchedNet(tasks, shared_partitions(["seg", "depth"], NUM_STAGES), config.model, config.image_size)
    splits = [build_dataset(config, s, ["seg", "depth"]) for s in ("train", "val")]
    result = fit(model, tasks, config, out, *splits, quiet=True, resume=resume,
                 hooks=[*roaming_hooks(config), *hooks])
    return model, result


def test_p_one_reproduces_the_plain_run_exactly(tiny_config, tmp_path):
    plain_model, plain = tiny_run(tiny_config, [], tmp_path / "plain", epochs=1)
    model, roamed = tiny_run(tiny_config, ["train.roaming.p=1"], tmp_path / "p1", epochs=1)
    assert roamed.val == plain.val
    assert [h["train_loss"] for h in roamed.history] == [h["train_loss"] for h in plain.history]
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in plain_model.state_dict().items())


class ReadCounter(TrainingHook):
    """Counts tensor reads by branchnet code between its before_step and after_step (the roaming
    hook runs its after_step first: its mask updates are inside the window)."""

    name = "reads"

    def __init__(self, counter):
        self.counter, self.inside = counter, []

    def before_step(self, ctx, images, targets):
        self.start = self.counter["n"]

    def after_step(self, ctx):
        self.inside.append(self.counter["n"] - self.start)


def count_reads(monkeypatch):
    counter = {"n": 0}

    def counting(name):
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("branchnet"):
                counter["n"] += 1
            return real(self, *args, **kwargs)
        return wrapper

    for name in ("item", "__float__", "__int__", "__bool__", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    monkeypatch.setattr(engine, "SYNC_SECONDS", 1e9)
    monkeypatch.setattr(guard, "SYNC_SECONDS", 1e9)
    return counter


def test_a_resumed_roaming_run_equals_the_uninterrupted_one(tiny_config, tmp_path, monkeypatch):
    """delta = 0.5 epochs at 2 steps per epoch: an update after every optimiser step, so masks change
    inside both halves; the killed run's checkpoint holds the masks and the plan's state."""
    sets = ["train.roaming={p: 0.5, delta: 0.5}"]
    with monkeypatch.context() as patch:
        counter = count_reads(patch)
        reads = ReadCounter(counter)
        full_model, full = tiny_run(tiny_config, sets, tmp_path / "full", hooks=[reads])
    assert reads.inside == [0] * 4  # no host read inside a step, mask updates included
    assert [h["roaming"]["steps"] for h in full.history] == [2, 4]

    real_save = engine.atomic_torch_save
    calls = {"n": 0}

    def save_then_die(path, obj):
        real_save(path, obj)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tiny_config, sets, tmp_path / "killed")
    monkeypatch.setattr(engine, "atomic_torch_save", real_save)
    state = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    plan = state["hooks"]["roaming"]
    assert plan["steps"] == 2 and len(plan["used"]) == len(plan["layers"]) > 0
    assert any(k.startswith("channel_masks.nodes.s0_g0.m") for k in state["model"])
    model, resumed = tiny_run(tiny_config, sets, tmp_path / "killed", resume=True)
    assert resumed.val == full.val
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    a, b = full_model.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

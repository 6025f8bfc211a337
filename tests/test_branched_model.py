"""BranchedNet against its definition: params equal the tree's, shared nodes run once,
initialisation from single-task weights, and the two ends of the tree family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from branchnet.affinity import AffinityData
from branchnet.nn.backbones import NUM_STAGES
from branchnet.config import ModelConfig
from branchnet.nn.branched import BranchedNet
from branchnet.tree import separate_partitions, shared_partitions
from branchnet.tree.search import search_tree
from branchnet.tasks import TaskSpec, make_task
from branchnet.tree import make_tree

SIZE = (32, 32)
SPECS = {"seg": TaskSpec("segmentation", num_classes=4), "depth": TaskSpec("depth"),
         "normals": TaskSpec("normals"), "count": TaskSpec("classification", num_classes=5)}


def tasks(names=("seg", "depth", "normals", "count")):
    return [make_task(n, SPECS[n]) for n in names]


def model_config(backbone="resnet18", width=0.125):
    stride = 8 if backbone.startswith("resnet") else 32
    return ModelConfig(backbone=backbone, width=width, output_stride=stride, head_channels=8)


def random_affinity(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (NUM_STAGES, n, n))
    a = (a + a.transpose(0, 2, 1)) / 2
    for d in range(NUM_STAGES):
        np.fill_diagonal(a[d], 1.0)
    return a


def affinity_with_costs(task_list, cfg) -> AffinityData:
    """Affinity data costed by the network itself (what `branchnet affinity` stores)."""
    names = [t.name for t in task_list]
    costs = BranchedNet(task_list, shared_partitions(names, NUM_STAGES), cfg, SIZE).costs()
    return AffinityData(random_affinity(len(names)), names, [f"stage{d}" for d in range(NUM_STAGES)],
                        stage_params=np.array(costs["stage_params"], float),
                        head_params=np.array([costs["head_params"][t] for t in names], float),
                        stage_flops=np.array(costs["stage_flops"], float),
                        head_flops=np.array([costs["head_flops"][t] for t in names], float),
                        backbone=cfg.backbone)


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("backbone, width", [("resnet18", 0.125), ("hrnet_w18_small", 1.0)])
def test_params_equal_the_tree_json_params(backbone, width):
    cfg = model_config(backbone, width)
    task_list = tasks()
    affinity = affinity_with_costs(task_list, cfg)
    names = affinity.tasks
    shared = make_tree(shared_partitions(names, NUM_STAGES), names, affinity.locations, affinity.affinity,
                       stage_params=affinity.stage_params, head_params=affinity.head_params)
    separate = make_tree(separate_partitions(names, NUM_STAGES), names, affinity.locations, affinity.affinity,
                         stage_params=affinity.stage_params, head_params=affinity.head_params)
    budget = (shared.params + separate.params) / 2
    found = search_tree(affinity, budget)
    for tree in (shared, separate, found):
        net = BranchedNet(task_list, tree.partitions, cfg, SIZE)
        assert n_params(net) == tree.params
        costs = net.costs()
        assert costs["params"] == tree.params
        assert costs["flops"] == pytest.approx(
            sum(len(p) * f for p, f in zip(tree.partitions, affinity.stage_flops)) + affinity.head_flops.sum())
    assert len({tuple(map(len, t.partitions)) for t in (shared, found, separate)}) >= 2


def test_each_node_runs_once_per_batch_and_feeds_all_children():
    cfg = model_config()
    task_list = tasks()
    partitions = [[["seg", "depth", "normals", "count"]], [["seg", "depth", "normals"], ["count"]],
                  [["seg", "depth"], ["normals"], ["count"]], [["seg"], ["depth"], ["normals"], ["count"]]]
    net = BranchedNet(task_list, partitions, cfg, SIZE).eval()
    calls: dict[str, int] = {}
    for key, node in net.nodes.items():
        node.register_forward_hook(lambda m, i, o, key=key: calls.__setitem__(key, calls.get(key, 0) + 1))
    x = torch.randn(3, 3, *SIZE)
    with torch.no_grad():
        out = net(x)
    assert sorted(calls) == sorted(net.nodes.keys()) and set(calls.values()) == {1}
    assert len(calls) == sum(len(p) for p in partitions)
    assert out["seg"].shape == (3, 4, *SIZE) and out["count"].shape == (3, 5)
    # the prediction of a task equals running its own path of nodes by hand
    with torch.no_grad():
        h = x
        for d, partition in enumerate(net.partitions):
            j = next(k for k, g in enumerate(partition) if "normals" in g)
            h = net.nodes[net.node_key(d, j)](h)
        assert torch.allclose(net.heads["normals"](h, SIZE), out["normals"])


def test_partitions_must_nest_and_cover():
    cfg = model_config()
    from branchnet.errors import BadInput

    bad = [[["seg", "depth"], ["normals", "count"]], [["seg", "normals"], ["depth"], ["count"]],
           [["seg"], ["normals"], ["depth"], ["count"]], [["seg"], ["normals"], ["depth"], ["count"]]]
    with pytest.raises(BadInput, match="nest"):
        BranchedNet(tasks(), bad, cfg, SIZE)
    with pytest.raises(BadInput, match="misses"):
        BranchedNet(tasks(), [[["seg", "depth", "normals"]]] * NUM_STAGES, cfg, SIZE)
    with pytest.raises(BadInput, match="levels"):
        BranchedNet(tasks(), shared_partitions(["seg", "depth", "normals", "count"], 3), cfg, SIZE)


def single_states(task_list, cfg):
    states = {}
    for i, task in enumerate(task_list):
        torch.manual_seed(100 + i)
        states[task.name] = BranchedNet([task], shared_partitions([task.name], NUM_STAGES), cfg, SIZE).state_dict()
    return states


def test_separate_tree_from_single_models_predicts_like_them():
    cfg = model_config()
    task_list = tasks()
    states = single_states(task_list, cfg)
    net = BranchedNet(task_list, separate_partitions([t.name for t in task_list], NUM_STAGES), cfg, SIZE)
    net.init_from_single(states, "first")
    net.eval()
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        out = net(x)
        for task in task_list:
            single = BranchedNet([task], shared_partitions([task.name], NUM_STAGES), cfg, SIZE)
            single.load_state_dict(states[task.name])
            assert torch.allclose(single.eval()(x)[task.name], out[task.name], atol=1e-6)


@pytest.mark.parametrize("mode", ["first", "average"])
def test_init_modes_copy_or_average_the_group(mode):
    cfg = model_config()
    task_list = tasks()
    names = [t.name for t in task_list]
    states = single_states(task_list, cfg)
    partitions = [[names], [["seg", "depth"], ["normals", "count"]], [["seg", "depth"], ["normals", "count"]],
                  [["seg"], ["depth"], ["normals", "count"]]]
    net = BranchedNet(task_list, partitions, cfg, SIZE)
    net.init_from_single(states, mode)
    got = net.state_dict()
    for d, partition in enumerate(net.partitions):
        for j, group in enumerate(partition):
            sources = group if mode == "average" else group[:1]
            for key, value in got.items():
                prefix = f"nodes.{net.node_key(d, j)}."
                if not key.startswith(prefix):
                    continue
                own = key[len(prefix):]
                values = [states[t][f"nodes.{net.node_key(d, 0)}.{own}"] for t in sources]
                if value.is_floating_point():
                    expected = torch.stack([v.double() for v in values]).mean(0)
                    assert torch.allclose(value.double(), expected, atol=1e-6), key
                else:
                    assert torch.equal(value, values[0]), key
    for t in names:  # heads always come from their own task
        for key, value in states[t].items():
            if key.startswith(f"heads.{t}."):
                assert torch.equal(got[key], value)


def test_random_init_differs_from_single_weights_and_missing_tasks_are_named():
    cfg = model_config()
    task_list = tasks()
    states = single_states(task_list, cfg)
    torch.manual_seed(7)
    net = BranchedNet(task_list, shared_partitions([t.name for t in task_list], NUM_STAGES), cfg, SIZE)
    key = next(k for k in net.state_dict() if k.startswith("nodes.s3_g0.") and k.endswith("weight"))
    assert not torch.equal(net.state_dict()[key], states["seg"][key])
    from branchnet.errors import BadInput

    with pytest.raises(BadInput, match="count"):
        net.init_from_single({t: s for t, s in states.items() if t != "count"}, "first")

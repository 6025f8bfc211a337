"""Forward time of a branched network against the all-shared and all-separate networks.

A branched network computes every node once per batch, so its forward time should
follow its FLOPs: this prints, for the same backbone and tasks, each network's FLOPs
and measured forward time relative to the all-shared network, and how far the time
ratio is from the FLOPs ratio (goal: within 15%), for the whole network and for the
encoder tree alone (the stages, where a node computed twice would show), plus training
images/s.

    python tools/bench_branched.py [--backbone resnet18] [--width 0.5] [--size 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from branchnet.config import ModelConfig
from branchnet.nn.branched import BranchedNet
from branchnet.tree import separate_partitions, shared_partitions
from branchnet.tasks import TaskSpec, make_task

TASKS = ["seg", "depth", "normals", "edges", "keypoints", "count"]


def make_tasks():
    specs = {"seg": TaskSpec("segmentation", num_classes=4), "depth": TaskSpec("depth"),
             "normals": TaskSpec("normals"), "edges": TaskSpec("edges"), "keypoints": TaskSpec("keypoints"),
             "count": TaskSpec("classification", num_classes=6)}
    return [make_task(name, specs[name]) for name in TASKS]


def branched_partitions() -> list[list[list[str]]]:
    """A typical tree: shared stem, geometry vs objects at layer3, more splits at layer4."""
    return [[TASKS], [TASKS], [["depth", "normals", "edges"], ["seg", "keypoints", "count"]],
            [["depth", "normals"], ["edges"], ["seg", "keypoints"], ["count"]]]


def time_forward(model: torch.nn.Module, x: torch.Tensor, repeats: int, encoder_only: bool = False) -> float:
    """Median seconds per forward pass (eval mode, no gradients); ``encoder_only``: the
    tree of stages without the heads (``forward_levels``)."""
    model.eval()
    run = model.forward_levels if encoder_only else model
    first = x if isinstance(x, torch.Tensor) else x[0]  # an HRNet stage takes a list of tensors
    cuda = first.is_cuda
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            run(x)
            if cuda:
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def stage_times(model: BranchedNet, x: torch.Tensor, repeats: int) -> list[float]:
    """Median seconds of one copy of each stage on its own input (from the first group's path)."""
    model.eval()
    with torch.no_grad():
        inputs = [x] + [level[0] for level in model.forward_levels(x)[:-1]]
    out = []
    for d, h in enumerate(inputs):
        node = model.nodes[model.node_key(d, 0)]
        out.append(time_forward(node, h, repeats))
    return out


def time_training(model: BranchedNet, tasks, x: torch.Tensor, steps: int) -> float:
    """Training images per second (forward, summed losses, backward, Adam step)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    targets = {
        "seg": torch.randint(0, 4, (x.shape[0], *x.shape[-2:]), device=x.device),
        "depth": torch.rand(x.shape[0], 1, *x.shape[-2:], device=x.device) + 0.5,
        "normals": torch.nn.functional.normalize(torch.randn(x.shape[0], 3, *x.shape[-2:], device=x.device), dim=1),
        "edges": (torch.rand(x.shape[0], 1, *x.shape[-2:], device=x.device) > 0.9).float(),
        "keypoints": torch.rand(x.shape[0], 1, *x.shape[-2:], device=x.device),
        "count": torch.randint(0, 6, (x.shape[0],), device=x.device),
    }
    for i in range(steps + 1):
        if i == 1:
            if x.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        outputs = model(x)
        loss = sum(t.loss(outputs[t.name], targets[t.name]) for t in tasks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    tasks = make_tasks()
    config = ModelConfig(backbone=args.backbone, width=args.width, head_channels=32)
    size = (args.size, args.size)
    x = torch.randn(args.batch_size, 3, *size, device=args.device)
    networks = {
        "shared": shared_partitions(TASKS, 4),
        "branched": branched_partitions(),
        "separate": separate_partitions(TASKS, 4),
    }
    print(f"{args.backbone} x{args.width} at {args.size}x{args.size}, batch {args.batch_size}, "
          f"{len(TASKS)} tasks, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'network':9s} {'groups':>10s} {'params':>8s} {'GFLOPs/img':>10s} {'ms/batch':>9s} "
          f"{'FLOPs ratio':>11s} {'time ratio':>10s} {'time/FLOPs':>10s} {'enc. FLOPs':>10s} {'enc. time':>9s} "
          f"{'enc. t/F':>8s} {'enc. t/model':>12s} {'train img/s':>11s}")
    base = None
    per_stage = None
    for name, partitions in networks.items():
        model = BranchedNet(tasks, partitions, config, size).to(args.device)
        costs = model.costs()
        seconds = time_forward(model, x, args.repeats)
        encoder_seconds = time_forward(model, x, args.repeats, encoder_only=True)
        encoder_flops = sum(len(p) * f for p, f in zip(partitions, costs["stage_flops"]))
        per_stage = per_stage or stage_times(model, x, args.repeats)
        modelled = sum(len(p) * t for p, t in zip(partitions, per_stage))
        speed = time_training(model, tasks, x, args.train_steps)
        base = base or (costs["flops"], seconds, encoder_flops, encoder_seconds)
        flops_ratio = costs["flops"] / base[0]
        time_ratio = seconds / base[1]
        enc_flops_ratio, enc_time_ratio = encoder_flops / base[2], encoder_seconds / base[3]
        groups = "-".join(str(len(p)) for p in partitions)
        print(f"{name:9s} {groups:>10s} {costs['params'] / 1e6:7.2f}M {costs['flops'] / 1e9:10.3f} "
              f"{seconds * 1e3:9.1f} {flops_ratio:11.2f} {time_ratio:10.2f} {time_ratio / flops_ratio:10.2f} "
              f"{enc_flops_ratio:10.2f} {enc_time_ratio:9.2f} {enc_time_ratio / enc_flops_ratio:8.2f} "
              f"{encoder_seconds / modelled:12.2f} {speed:11.1f}")
    print(f"stage times (one copy, ms): {', '.join(f'{t * 1e3:.1f}' for t in per_stage)}")
    print("ratios against the all-shared network. t/F = time ratio / FLOPs ratio. enc. t/model = encoder time / "
          "sum_d k_d x (time of one copy of stage d): 1.00 +- 0.15 means every node runs once per batch")


if __name__ == "__main__":
    main()

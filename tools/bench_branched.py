"""Forward time of a branched network against the all-shared and all-separate networks.

A branched network computes every node once per batch, so its forward time should
follow its FLOPs: this prints, for the same backbone and tasks, each network's FLOPs
and measured forward time relative to the all-shared network, and how far the time
ratio is from the FLOPs ratio (goal: within 15%), plus training images/s.

    python tools/bench_branched.py [--backbone resnet18] [--width 0.5] [--size 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from branchnet.config import ModelConfig
from branchnet.model import BranchedNet, separate_partitions, shared_partitions
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


def time_forward(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds per forward pass (eval mode, no gradients)."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            if x.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


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
          f"{'FLOPs ratio':>11s} {'time ratio':>10s} {'time/FLOPs':>10s} {'train img/s':>11s}")
    base = None
    for name, partitions in networks.items():
        model = BranchedNet(tasks, partitions, config, size).to(args.device)
        costs = model.costs()
        seconds = time_forward(model, x, args.repeats)
        speed = time_training(model, tasks, x, args.train_steps)
        base = base or (costs["flops"], seconds)
        flops_ratio = costs["flops"] / base[0]
        time_ratio = seconds / base[1]
        groups = "-".join(str(len(p)) for p in partitions)
        print(f"{name:9s} {groups:>10s} {costs['params'] / 1e6:7.2f}M {costs['flops'] / 1e9:10.3f} "
              f"{seconds * 1e3:9.1f} {flops_ratio:11.2f} {time_ratio:10.2f} {time_ratio / flops_ratio:10.2f} "
              f"{speed:11.1f}")
    print("time/FLOPs within 0.85..1.15 means each node runs once and time follows compute")


if __name__ == "__main__":
    main()

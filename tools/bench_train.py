"""Training throughput and peak memory of a single-task model, small vs mid-size backbone;
TAG's overhead on all-shared training.

Prints images/s and peak memory (resident set on the CPU, allocator peak on a GPU) of
the training step (forward, loss, backward, optimiser step) for each backbone, with
the ratio to the smallest one measured in the same run. Then the all-shared network of the
default scenes config (the five scenes tasks) trained plainly and with TAG's lookahead
(:class:`branchnet.affinity.tag.TagHook`) every ``--tag-every`` steps: wall and CPU time per
step over whole measuring periods, plain and TAG periods interleaved in one process (the CPU
time ratio holds under load), and the ratios (goal: under 2x at tag_every = 10 for 5 tasks).

    python tools/bench_train.py [--device cpu|cuda] [--steps 10] [--batch-size 32] [--tag-every 10]
    python tools/bench_train.py --tag-only [--tag-blocks 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CASES = [  # (label, backbone, width, output_stride, image size)
    ("small: resnet18 x0.25 OS8 @64", "resnet18", 0.25, 8, 64),
    ("mid: resnet50 x1.0 OS32 @128", "resnet50", 1.0, 32, 128),
    ("mid: hrnet_w18_small @128", "hrnet_w18_small", 1.0, 32, 128),
]


def measure(backbone: str, width: float, output_stride: int, size: int, steps: int, batch: int, device: str) -> dict:
    """Run in a fresh process so that the peak memory belongs to this case alone."""
    import torch

    from branchnet.config import ModelConfig
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import shared_partitions
    from branchnet.tasks import TaskSpec, make_task

    torch.manual_seed(0)
    task = make_task("seg", TaskSpec("segmentation", num_classes=8))
    model = BranchedNet([task], shared_partitions(["seg"], 4),
                        ModelConfig(backbone=backbone, width=width, output_stride=output_stride, head_channels=64),
                        (size, size)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 8, (batch, size, size), device=device)
    use_amp = device == "cuda"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = task.loss(model(x)["seg"].float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"images_per_s": steps * batch / seconds, "peak_mb": peak,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops_per_image": model.costs()["flops"] / 1e9}


def measure_tag(every: int, blocks: int, batch: int, device: str) -> dict:
    """All-shared scenes network, five tasks, in one process: ``blocks`` periods of ``every`` plain
    steps interleaved with as many periods with TAG (its lookahead on the first step of each),
    so that a changing load on the machine hits both alike. Wall and CPU seconds per step."""
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from bench_roaming import TASKS, scene_tasks

    from branchnet.affinity.tag import TagHook
    from branchnet.config import ModelConfig
    from branchnet.nn.branched import BranchedNet
    from branchnet.tree import shared_partitions

    torch.manual_seed(0)
    tasks = scene_tasks()
    model = BranchedNet(tasks, shared_partitions(list(TASKS), 4),
                        ModelConfig(backbone="resnet18", width=0.25, output_stride=8, head_channels=32),
                        (64, 64)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 64, 64, generator=g).to(device)
    targets = {"seg": torch.randint(0, 4, (batch, 64, 64), generator=g),
               "depth": torch.rand(batch, 1, 64, 64, generator=g) + 0.5,
               "normals": torch.nn.functional.normalize(torch.randn(batch, 3, 64, 64, generator=g), dim=1),
               "edges": (torch.rand(batch, 1, 64, 64, generator=g) > 0.9).float(),
               "keypoints": torch.rand(batch, 1, 64, 64, generator=g)}
    targets = {k: v.to(device) for k, v in targets.items()}
    hook = TagHook(every)

    class Ctx:
        pass

    ctx = Ctx()
    ctx.model, ctx.tasks, ctx.lr = model, tasks, 2e-3

    def step(i: int, tag: bool) -> None:
        if tag:
            ctx.step = i
            hook.before_step(ctx, x, targets)
        out = model(x)
        loss = sum(t.loss(out[t.name].float(), targets[t.name]) for t in tasks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0, True)  # warm-up, the lookahead included
    totals = {False: [0.0, 0.0], True: [0.0, 0.0]}
    for _ in range(blocks):
        for tag in (False, True):
            if device == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(every):
                step(i, tag)
            if device == "cuda":
                torch.cuda.synchronize()
            totals[tag][0] += time.perf_counter() - wall
            totals[tag][1] += time.process_time() - cpu
    n = blocks * every
    return {"plain": [v / n for v in totals[False]], "tag": [v / n for v in totals[True]]}


def tag_overhead(args) -> None:
    every, blocks = args.tag_every, max(1, args.tag_blocks)
    out = subprocess.run([sys.executable, __file__, "--tag-case", str(every), "--tag-blocks", str(blocks),
                          "--batch-size", str(args.batch_size), "--device", args.device],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nTAG overhead: all-shared resnet18 x0.25 OS8 @64, 5 tasks, batch {args.batch_size}, "
          f"{blocks} x {every} steps each, interleaved, load average {os.getloadavg()[0]:.2f}")
    print(f"{'training':20s} {'wall s/step':>11s} {'CPU s/step':>11s} {'wall ratio':>10s} {'CPU ratio':>10s}")
    for label, key in (("plain", "plain"), (f"TAG every {every}", "tag")):
        wall, cpu = r[key]
        print(f"{label:20s} {wall:11.3f} {cpu:11.3f} {wall / r['plain'][0]:9.2f}x {cpu / r['plain'][1]:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tag-every", type=int, default=10)
    parser.add_argument("--tag-blocks", type=int, default=2, help="measuring periods of each kind")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tag-case", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tag-only", action="store_true", help="only the TAG overhead")
    args = parser.parse_args()
    if args.tag_case is not None:
        print(json.dumps(measure_tag(args.tag_case, args.tag_blocks, args.batch_size, args.device)))
        return
    if args.tag_only:
        tag_overhead(args)
        return
    if args.case is not None:
        label, backbone, width, stride, size = CASES[args.case]
        print(json.dumps(measure(backbone, width, stride, size, args.steps, args.batch_size, args.device)))
        return
    print(f"training step, batch {args.batch_size}, {args.steps} steps, device {args.device}, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'case':34s} {'params':>8s} {'GFLOPs/img':>10s} {'img/s':>8s} {'peak MB':>8s} {'speed vs small':>14s}")
    base = None
    for i, (label, *_rest) in enumerate(CASES):
        out = subprocess.run([sys.executable, __file__, "--case", str(i), "--steps", str(args.steps),
                              "--batch-size", str(args.batch_size), "--device", args.device],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or r["images_per_s"]
        print(f"{label:34s} {r['params_m']:7.2f}M {r['gflops_per_image']:10.3f} {r['images_per_s']:8.1f} "
              f"{r['peak_mb']:8.0f} {r['images_per_s'] / base:13.2f}x")
    tag_overhead(args)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    main()

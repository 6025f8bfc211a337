"""Training throughput and peak memory of a single-task model, small vs mid-size backbone.

Prints images/s and peak memory (resident set on the CPU, allocator peak on a GPU) of
the training step (forward, loss, backward, optimiser step) for each backbone, with
the ratio to the smallest one measured in the same run.

    python tools/bench_train.py [--device cpu|cuda] [--steps 10] [--batch-size 32]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
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


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    main()

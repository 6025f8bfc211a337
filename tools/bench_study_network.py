"""Benchmark: the training of one study network on a CPU, before and after issue 24's speed-ups.

A study (``branchnet evaluate``, ``branchnet search``) trains dozens of small networks; what one
of them costs is what the study costs. This trains networks of ``configs/scenes-evaluate.yaml``'s
size (the five scenes tasks at 48 x 48, resnet18 x0.25 at output stride 8, batch 32) through the
training loop itself (:func:`branchnet.train.engine.fit`: epochs, validation, the final test
pass, checkpoints) for three trees (all-shared, a mid tree, all-separate), twice each:

* **before**: the code as it was, restored in this process: NCHW tensors on the CPU, Adam's
  per-tensor loop, the normals loss through ``Tensor.norm``/``F.normalize``, the masked losses
  through boolean indexing, ``argmax`` in the confusion matrix;
* **after**: this version: channels-last on the CPU (oneDNN's fast layout), torch's fused
  optimiser kernel, the normals and masked losses written out (:mod:`branchnet.tasks.types`).

Before and after alternate (before, after, before, after, ...), so a changing load hits both
alike; both train the same network from the same seed on ``--threads`` threads. Prints wall and
CPU seconds per network, the ratio, and the load average before and after.

Usage::

    python tools/bench_study_network.py [--images 256] [--epochs 2] [--threads 1] [--repeats 2]
                                        [--backbone resnet18 --width 0.25 --output-stride 8]

Other backbones vary the shapes: ``--backbone resnet50 --width 0.5 --output-stride 32`` or
``--backbone hrnet_w18_small --size 64`` (HRNet takes no width or output stride, and sides that 32
divides).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = """\
name: bench-study-network
seed: 0
data:
  dataset: scenes
  image_size: [{size}, {size}]
  splits: {{train: {images}, val: 64, test: 64, affinity: 16}}
tasks: [seg, depth, normals, edges, keypoints]
model: {model}
train: {{epochs: {epochs}, batch_size: 32, optimizer: adam, lr: 0.002, weight_decay: 0.0001, schedule: poly,
         device: cpu}}
affinity: {{images: 16}}
"""


def _old_losses():
    """The loss and metric code before issue 24 (the baseline), as replacement methods."""
    import torch
    import torch.nn.functional as F

    def normals_valid(target):
        return target.norm(dim=1) > 0.5

    def normals_loss(self, pred, target):
        valid = normals_valid(target)
        cos = (F.normalize(pred, dim=1) * target).sum(1)
        return (1.0 - cos)[valid].sum(), valid.sum().to(torch.float32)

    def normals_metrics(self, acc, pred, target):
        acc.update(F.normalize(pred, dim=1), target, normals_valid(target))

    def depth_loss(self, pred, target):
        valid = self._valid(target)
        return (pred - target).abs()[valid].sum(), valid.sum().to(torch.float32)

    def edges_loss(self, pred, target):
        valid = self._valid(target)
        y = torch.where(valid, target, torch.zeros_like(target))
        w = self.options["pos_weight"]
        weight = torch.where(y > 0.5, torch.full_like(y, w), torch.full_like(y, 1.0 - w))
        loss = F.binary_cross_entropy_with_logits(pred, y, weight=weight, reduction="none")
        return loss[valid].sum(), valid.sum().to(torch.float32)

    def confusion_update(self, logits, target):
        pred = logits.argmax(1).flatten()
        target = target.flatten().long()
        valid = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        index = target[valid] * self.num_classes + pred[valid]
        counts = torch.bincount(index, minlength=self.num_classes ** 2)
        self._add("confusion", counts.reshape(self.num_classes, self.num_classes))

    return normals_loss, normals_metrics, depth_loss, edges_loss, confusion_update


@contextlib.contextmanager
def before_issue_24():
    """Put the old code back for the block (the module attributes the loop reads)."""
    import branchnet.train.acceleration as acceleration
    import branchnet.train.engine as engine
    import branchnet.train.optim as optim
    import branchnet.train.validation as validation
    from branchnet.tasks.metrics import ConfusionMatrix
    from branchnet.tasks.types import Depth, Edges, Normals

    normals_loss, normals_metrics, depth_loss, edges_loss, confusion_update = _old_losses()
    patches = [(acceleration, "memory_format", lambda device: None), (engine, "memory_format", lambda device: None),
               (validation, "memory_format", lambda device: None), (optim, "fused", lambda parameters: False),
               (Normals, "loss_terms", normals_loss), (Normals, "update_metrics", normals_metrics),
               (Depth, "loss_terms", depth_loss), (Edges, "loss_terms", edges_loss),
               (ConfusionMatrix, "update", confusion_update)]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a study job's budget)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=48, help="image side in pixels (HRNet: a multiple of 32)")
    parser.add_argument("--backbone", default="resnet18", help="a timm ResNet or HRNet")
    parser.add_argument("--width", type=float, default=0.25, help="ResNet width (ignored for HRNet)")
    parser.add_argument("--output-stride", type=int, default=8, help="ResNet output stride (ignored for HRNet)")
    args = parser.parse_args()
    model = f"{{backbone: {args.backbone}, head_channels: 32"
    if not args.backbone.startswith("hrnet"):
        model += f", width: {args.width}, output_stride: {args.output_stride}"
    model += "}"
    os.environ.setdefault("BRANCHNET_QUIET", "1")

    import torch

    from branchnet.config import load_config
    from branchnet.data import build_dataset, build_tasks
    from branchnet.nn.backbones import build_stages
    from branchnet.nn.branched import BranchedNet
    from branchnet.train.engine import fit
    from branchnet.tree import separate_partitions, shared_partitions

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-study-network-") as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(CONFIG.format(images=args.images, epochs=args.epochs, model=model, size=args.size))
        config = load_config(path)
        tasks = build_tasks(config)
        names = [t.name for t in tasks]
        splits = {s: build_dataset(config, s) for s in ("train", "val", "test")}
        depth = build_stages(config.model, config.image_size)[1].num_stages
        half = depth // 2
        mid = ([[names] for _ in range(half)]
               + [[["seg", "depth"], ["normals", "edges", "keypoints"]] for _ in range(depth - half)])
        trees = {"all-shared": shared_partitions(names, depth), "mid (2 branches at stage "
                 f"{half + 1} of {depth})": mid, "all-separate": separate_partitions(names, depth)}

        def train(partitions, out: Path) -> tuple[float, float]:
            torch.manual_seed(config.seed)
            model = BranchedNet(tasks, partitions, config.model, config.image_size)
            wall, cpu = time.perf_counter(), time.process_time()
            fit(model, tasks, config, out, splits["train"], splits["val"], splits["test"], quiet=True)
            return time.perf_counter() - wall, time.process_time() - cpu

        load = os.getloadavg()
        print(f"{model}: {len(names)} tasks, {args.images} images of {args.size}x{args.size}, {args.epochs} epochs, batch 32, "
              f"{args.threads} thread(s); before and after alternate, {args.repeats} of each per tree", flush=True)
        results = {}
        for label, partitions in trees.items():
            times = {"before": [], "after": []}
            for r in range(args.repeats):
                for side in ("before", "after"):
                    with before_issue_24() if side == "before" else contextlib.nullcontext():
                        times[side].append(train(partitions, Path(tmp) / f"{label[:3]}-{side}-{r}"))
            results[label] = times
        load_after = os.getloadavg()

    print(f"\nload average {load[0]:.2f} before, {load_after[0]:.2f} after (figures under load are provisional)")
    print("| tree | before: wall s | after: wall s | wall ratio | before: CPU s | after: CPU s | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, times in results.items():
        bw, bc = (sum(t[i] for t in times["before"]) / args.repeats for i in (0, 1))
        aw, ac = (sum(t[i] for t in times["after"]) / args.repeats for i in (0, 1))
        print(f"| {label} | {bw:.2f} | {aw:.2f} | {bw / aw:.2f}x | {bc:.2f} | {ac:.2f} | {bc / ac:.2f}x |")


if __name__ == "__main__":
    main()

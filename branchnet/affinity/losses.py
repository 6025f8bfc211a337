"""Per-image losses of a trained model: the input of the FAFS affinity (:mod:`branchnet.affinity.fafs`).

Image n's loss for task t is the task's own training loss on that image alone,
``loss_terms(pred_n, target_n)`` summed over its valid elements divided by their number
(:meth:`branchnet.tasks.Task.loss` of a batch of one; 0 for an image without a valid
element). Images are run batch by batch in the dataset's order (no shuffling, no sharding:
the same images in the same order for every task, as FAFS compares tasks image by image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from branchnet.errors import BadInput


def per_image_losses(model: Any, task: Any, dataset: torch.utils.data.Dataset, *, images: int | None = None,
                     batch_size: int = 32, device: str | torch.device = "cpu", workers: int = 0) -> np.ndarray:
    """(K,) float64: the loss of ``task`` on each of the first K images of ``dataset``.

    Args:
        model: a :class:`~branchnet.model_file.LoadedModel` (from
            :func:`~branchnet.model_file.load_model`) or a :class:`~branchnet.nn.branched.BranchedNet`
            that solves ``task``; it runs in eval mode (its mode is restored afterwards).
        task: the task's name, or a :class:`~branchnet.tasks.Task` (its ``loss_terms`` score).
        dataset: yields ``(image (3, H, W), {task: target})``, e.g.
            ``build_dataset(config, "affinity", tasks=[task])``.
        images: K, the first K images (default: all of them).
        batch_size, device, workers: how the images are run.

    Raises :class:`BadInput` when the model does not solve the task, the dataset gives no
    target for it, or there are no images.
    """
    net = getattr(model, "model", model)
    tasks = {t.name: t for t in getattr(net, "tasks", [])}
    name = task if isinstance(task, str) else task.name
    if name not in tasks:
        raise BadInput(f"the model solves {', '.join(tasks) or 'no task'}, not '{name}'; give the model of '{name}'")
    scorer = tasks[name] if isinstance(task, str) else task
    count = len(dataset) if images is None else min(int(images), len(dataset))
    if count < 1:
        raise BadInput("no images to compute per-image losses on; the affinity split is empty")
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=batch_size,
                                         shuffle=False, num_workers=workers)
    out = np.empty(count, dtype=np.float64)
    was_training = net.training
    net.eval()
    done = 0
    try:
        with torch.no_grad():
            for batch, targets in loader:
                if name not in targets:
                    raise BadInput(f"the dataset gives no target for task '{name}'; build it with that task "
                                   f"(e.g. build_dataset(config, 'affinity', tasks=['{name}']))")
                pred = net(batch.to(device))[name].float()
                target = targets[name].to(device)
                for i in range(pred.shape[0]):
                    total, valid = scorer.loss_terms(pred[i:i + 1], target[i:i + 1])
                    out[done + i] = float(total / valid.clamp_min(1))
                done += pred.shape[0]
    finally:
        net.train(was_training)
    return out

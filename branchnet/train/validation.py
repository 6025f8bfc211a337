"""The validation pass: split-level metrics of a network that maps images to ``{task: prediction}``
(the loop scores the validation split with it every ``train.eval_every`` epochs, and the test
split at the end). Not to be confused with ``branchnet evaluate``, the study of
:mod:`branchnet.steps.evaluate`."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from branchnet import distributed as dist_utils
from branchnet.progress import progress_bar
from branchnet.tasks import Task
from branchnet.train.acceleration import memory_format, prepare_model
from branchnet.train.loaders import to_device
from branchnet.train.precision import Precision


@torch.no_grad()
def split_metrics(model: nn.Module, tasks: Sequence[Task], loader: DataLoader, device: torch.device,
                  precision: Precision | None = None, quiet: bool = True, label: str = "evaluating"
                  ) -> dict[str, dict[str, float]]:
    """Split-level metrics ``{task: {metric: value}}`` (summed over ranks when distributed).

    ``model`` is put on ``device`` in the layout training uses there
    (:func:`~branchnet.train.acceleration.prepare_model`), so that a loaded model scores what its
    training scored to the last digit."""
    precision = precision or Precision(False)
    was_training = model.training
    prepare_model(model, device)
    layout = memory_format(device)
    model.eval()
    metrics = {t.name: t.new_metrics() for t in tasks}
    with progress_bar(quiet or not dist_utils.is_main()) as bar:
        job = bar.add_task(label, total=len(loader))
        for images, targets in loader:
            images, targets = to_device(images, device, layout), to_device(targets, device)
            with precision.autocast():
                outputs = model(images)
            for task in tasks:
                metrics[task.name].update(outputs[task.name].float(), targets[task.name])
            bar.advance(job)
    model.train(was_training)
    result = {}
    for name, m in metrics.items():
        m.all_reduce()
        result[name] = m.compute()
    return result

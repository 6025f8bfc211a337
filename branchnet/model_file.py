"""Trained-model files (``model.pt``): weights plus everything needed to rebuild the model (its config
included, so this module sits a floor above :mod:`branchnet.config` and :mod:`branchnet.nn`).

A ``model.pt`` holds only plain data (tensors, numbers, strings, lists, dicts), so it is
read with ``torch.load(..., weights_only=True)`` and no pickled code ever runs:

``format``, ``kind`` (single / branched / candidate), ``state_dict``, ``config`` (the
experiment config as a dict), ``tasks`` (each task's name, type, classes, options),
``partitions`` (the tree), ``layout`` (stage names, channels, strides), ``image_size``,
and free-form ``extra``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from branchnet.atomic import atomic_torch_save, load_checkpoint
from branchnet.config import Config, config_from_dict
from branchnet.errors import BadInput
from branchnet.nn.branched import BranchedNet
from branchnet.tasks import Task, TaskSpec, make_task

MODEL_FORMAT = "branchnet.model/1"


def save_model(path: str | os.PathLike, model: BranchedNet, config: Config, kind: str,
               extra: dict[str, Any] | None = None, written: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights and description) to ``path`` atomically; ``written``, when given,
    receives the file's bytes and SHA-256 (:func:`branchnet.atomic.atomic_torch_save`)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save(path, {
        "format": MODEL_FORMAT, "kind": kind, "state_dict": state, "config": config.to_dict(),
        **model.describe(), "extra": extra or {},
    }, written)


def task_from_description(info: dict[str, Any]) -> Task:
    """Rebuild a :class:`Task` from :meth:`Task.describe`'s dict."""
    spec = TaskSpec(info["type"], info.get("num_classes"), info.get("ignore_index"))
    return make_task(info["name"], spec, options=info.get("options") or {})


@dataclass
class LoadedModel:
    model: BranchedNet
    config: Config
    tasks: list[Task]
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Read a ``model.pt`` and rebuild its :class:`BranchedNet` with the trained weights."""
    path = Path(path)
    state = load_checkpoint(path)
    if state.get("format") != MODEL_FORMAT:
        raise BadInput(f"{path} is not a branchnet model file (format {state.get('format')!r}); "
                       "it should come from `branchnet train-single` or `branchnet train`")
    try:
        config = config_from_dict(state["config"], source=str(path))
        tasks = [task_from_description(info) for info in state["tasks"]]
        model = BranchedNet(tasks, state["partitions"], config.model, tuple(state["image_size"]))
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise BadInput(f"model file {path} is incomplete or does not match its description ({exc}); "
                       "retrain it with --force") from None
    model.to(device)
    return LoadedModel(model, config, tasks, state.get("kind", "?"), state.get("extra") or {})

"""Pictures of what a trained network predicts (``branchnet predict``).

For any ``model.pt`` (single-task, branched or candidate network; read with
:func:`branchnet.model_file.load_model`, ``torch.load(weights_only=True)``), the first
``images`` items of a split of the model's own config are run through the network and
drawn in one figure: a row per image, the input image first, then for each task its
target and its prediction:

================================ ===================================================
task type                        drawn as
================================ ===================================================
segmentation                     class colours (ignored pixels black)
depth                            a map (viridis; target and prediction share the
                                 target's range; missing pixels black)
normals                          RGB = (n + 1) / 2 (missing black)
edges, keypoints, edge_map       grey maps in [0, 1] (edge probability = sigmoid)
instance_offset                  offset direction as hue, length as brightness
classification, attribute(s)     text: the class or the 0/1 values (prediction with
                                 its probability)
================================ ===================================================

The split is read without augmentation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from branchnet.config import apply_sets, config_from_dict
from branchnet.data import IMAGE_MEAN, IMAGE_STD, SPLITS, build_dataset
from branchnet.errors import BadInput, unknown_choice
from branchnet.model_file import LoadedModel, load_model
from branchnet.tasks import Task

IMAGE_LEVEL = ("classification", "attribute", "attribute_group")


def load_for_prediction(model_path: str | os.PathLike, device: str = "cpu",
                        sets: Sequence[str] | None = None) -> LoadedModel:
    """The model of ``model_path``; ``sets`` (``section.key=value``) change its stored config
    (e.g. ``data.root`` when the data moved). :class:`BadInput` for a file that is not a
    branchnet model, or a ``device`` this machine does not have (:func:`branchnet.devices.check_device`)."""
    from branchnet.devices import check_device

    check_device(device, "--device")
    path = Path(model_path)
    if not path.is_file():
        raise BadInput(f"model file {path} does not exist; give the model.pt of a trained network "
                       "(RUNS/single/<task>/, RUNS/branched/<name>/ or RUNS/groupings/<group>/)")
    try:
        loaded = load_model(path, device)
    except BadInput as exc:
        if "branchnet model file" in str(exc):
            raise
        raise BadInput(f"{path} is not a branchnet model file ({exc})") from None
    if sets:
        raw = apply_sets(loaded.config.to_dict(), list(sets), str(path))
        loaded.config = config_from_dict(raw, source=str(path))
    return loaded


def _check_split(loaded: LoadedModel, split: str) -> None:
    if split not in SPLITS:
        raise unknown_choice("split", split, SPLITS)
    listed = loaded.config.data.splits
    if listed and split not in listed:
        raise BadInput(f"the model's config has no split '{split}' (data.splits lists {', '.join(listed)}); "
                       f"pick one of those")


def _denormalise(image: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (image.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _palette(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if n <= 20 else "hsv"]
    return np.array([cmap(i / (20 if n <= 20 else max(n, 1)))[:3] for i in range(n)])


def _class_colours(ids: np.ndarray, n: int) -> np.ndarray:
    colours = np.zeros(ids.shape + (3,))
    valid = (ids >= 0) & (ids < n)
    colours[valid] = _palette(n)[ids[valid]]
    return colours


def _offset_colours(offsets: np.ndarray, on: np.ndarray) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb

    angle = (np.arctan2(offsets[0], offsets[1]) + math.pi) / (2 * math.pi)
    length = np.hypot(offsets[0], offsets[1])
    value = length / max(float(length[on].max()) if on.any() else 1.0, 1e-6)
    hsv = np.stack([angle, np.ones_like(angle), np.clip(value, 0, 1)], -1)
    return np.where(on[..., None], hsv_to_rgb(hsv), 0.0)


def _text(task: Task, target: torch.Tensor, pred: torch.Tensor, which: str) -> str:
    if task.type_name == "classification":
        if which == "target":
            return f"class {int(target)}"
        prob = torch.softmax(pred.float(), 0)
        k = int(prob.argmax())
        return f"class {k}\n(p={float(prob[k]):.2f})"
    values = target.reshape(-1) if which == "target" else torch.sigmoid(pred.float().reshape(-1))
    if which == "target":
        return " ".join(str(int(v > 0.5)) for v in values)
    return " ".join(f"{float(v):.2f}" for v in values)


def _draw_dense(ax, task: Task, target: torch.Tensor, pred: torch.Tensor, which: str) -> None:
    import matplotlib

    t = task.type_name
    if t == "segmentation":
        n = task.out_channels
        ids = target.numpy() if which == "target" else pred.argmax(0).numpy()
        ax.imshow(_class_colours(ids.astype(np.int64), n), interpolation="nearest")
    elif t == "depth":
        valid = (target > 0) & torch.isfinite(target)
        low, high = (float(target[valid].min()), float(target[valid].max())) if valid.any() else (0.0, 1.0)
        values = (target if which == "target" else pred)[0].numpy()
        shown = np.ma.masked_where(~valid[0].numpy(), values) if which == "target" else values
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="black")
        ax.imshow(shown, cmap=cmap, vmin=low, vmax=max(high, low + 1e-6), interpolation="nearest")
    elif t == "normals":
        n = target if which == "target" else torch.nn.functional.normalize(pred, dim=0)
        ax.imshow(((n.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1) * (n.norm(dim=0, keepdim=True)
                                                                      .permute(1, 2, 0).numpy() > 0.5))
    elif t == "instance_offset":
        on = (target[2] > 0.5).numpy()
        offsets = (target[:2] if which == "target" else pred[:2]).numpy()
        ax.imshow(_offset_colours(offsets, on if which == "target" else np.ones_like(on)))
    else:  # edges, keypoints, edge_map and any other one-map type
        if which == "target":
            values = target[0].float()
            if t == "edges":
                values = torch.where(values == task.options.get("ignore_value", 255), 0.5, values)
        else:
            values = torch.sigmoid(pred[0].float()) if t == "edges" else pred[0].float()
        ax.imshow(values.numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")


def prediction_figure(loaded: LoadedModel, split: str = "val", images: int = 8):
    """The figure (matplotlib) of ``images`` items of ``split``: a row each (module docstring)."""
    import branchnet.plotting  # noqa: F401  (the Agg backend)
    import matplotlib.pyplot as plt

    if images < 1:
        raise BadInput(f"--images must be at least 1, got {images}")
    _check_split(loaded, split)
    dataset = build_dataset(loaded.config, split, [t.name for t in loaded.tasks])
    dataset.augmenter = None
    count = min(images, len(dataset))
    if count == 0:
        raise BadInput(f"split '{split}' of the model's config holds no images")
    model = loaded.model.eval()
    device = next(model.parameters()).device
    items = [dataset[i] for i in range(count)]
    batch = torch.stack([image for image, _ in items]).to(device)
    with torch.no_grad():
        outputs = {k: v.float().cpu() for k, v in model(batch).items()}
    tasks = loaded.tasks
    columns = 1 + 2 * len(tasks)
    fig, axes = plt.subplots(count, columns, figsize=(2.0 * columns, 2.0 * count), squeeze=False)
    for row, (image, targets) in enumerate(items):
        axes[row, 0].imshow(_denormalise(image))
        for k, task in enumerate(tasks):
            for j, which in enumerate(("target", "prediction")):
                ax = axes[row, 1 + 2 * k + j]
                target, pred = targets[task.name].cpu(), outputs[task.name][row]
                if task.type_name in IMAGE_LEVEL or not task.dense:
                    ax.text(0.5, 0.5, _text(task, target, pred, which), ha="center", va="center",
                            fontsize=9, wrap=True, transform=ax.transAxes)
                else:
                    _draw_dense(ax, task, target, pred, which)
    titles = ["image"] + [f"{t.name} {which}" for t in tasks for which in ("target", "prediction")]
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row in range(count):
        axes[row, 0].set_ylabel(f"{split} #{row}", fontsize=8)
    fig.suptitle(f"{loaded.kind} network: {', '.join(t.name for t in tasks)}", fontsize=10)
    fig.tight_layout()
    return fig


def predict(model_path: str | os.PathLike, split: str = "val", images: int = 8, out: str | os.PathLike | None = None,
            device: str = "cpu", sets: Sequence[str] | None = None) -> Path:
    """Draw a model's predictions (:func:`prediction_figure`) and save them; returns the file.

    ``out`` defaults to ``predictions_<split>.png`` beside the model file.
    """
    from branchnet.plotting import save_figure

    loaded = load_for_prediction(model_path, device, sets)
    fig = prediction_figure(loaded, split, images)
    target = Path(out) if out is not None else Path(model_path).with_name(f"predictions_{split}.png")
    return save_figure(fig, target)


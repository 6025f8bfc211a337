"""Writing an affinity file of any measure: affinity.npz, affinity.json and the figures beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from branchnet.affinity.file import AffinityData, save_affinity
from branchnet.atomic import atomic_write_json, ensure_writable_dir, json_safe
from branchnet.errors import BadInput


def output_paths(out_npz: str | os.PathLike) -> dict[str, Path]:
    """The files written for ``out_npz``: npz, json, heatmap png, depth png (beside each other)."""
    out = Path(out_npz)
    return {"npz": out, "json": out.with_suffix(".json"), "heatmaps": out.with_suffix(".png"),
            "depth": out.with_name(out.stem + "_depth.png")}


def check_out_path(out_npz: str | os.PathLike) -> Path:
    """BadInput unless ``out_npz`` ends in ``.npz``."""
    out = Path(out_npz)
    if out.suffix.lower() != ".npz":
        raise BadInput(f"--out {out} must be an .npz file (e.g. runs/exp/affinity.npz)")
    if out.exists() and out.is_dir():
        raise BadInput(f"--out {out} is a directory; give a file name ending in .npz")
    return out


def affinity_json(data: AffinityData, settings: dict[str, Any]) -> dict[str, Any]:
    """The content of affinity.json: the npz's arrays (RDMs only by shape) plus the settings used."""
    content: dict[str, Any] = {"measure": data.measure, "tasks": list(data.tasks), "locations": list(data.locations),
                               "affinity": np.asarray(data.affinity)}
    for key in ("stage_params", "head_params", "stage_flops", "head_flops", "affinity_std"):
        value = getattr(data, key)
        if value is not None:
            content[key] = np.asarray(value)
    for key, value in data.extra.items():
        content[key] = np.asarray(value)
    if data.backbone is not None:
        content["backbone"] = data.backbone
    if data.input_size is not None:
        content["input_size"] = list(data.input_size)
    if data.rdms is not None:
        content["rdms_shape"] = list(np.asarray(data.rdms).shape)
    content["settings"] = settings
    return json_safe(content)


def write_affinity_outputs(data: AffinityData, out_npz: str | os.PathLike,
                           settings: dict[str, Any]) -> dict[str, Path]:
    """Write affinity.npz (``save_affinity``), affinity.json beside it and the two figures.

    Every file is written atomically. Returns the paths by kind (npz, json, heatmaps, depth).
    """
    from branchnet.affinity.plots import plot_affinity_by_depth, plot_affinity_heatmaps

    paths = output_paths(check_out_path(out_npz))
    data.validate(str(paths["npz"]))
    content = affinity_json(data, settings)
    ensure_writable_dir(paths["npz"].parent)
    save_affinity(paths["npz"], data)
    atomic_write_json(paths["json"], content)
    plot_affinity_heatmaps(data, paths["heatmaps"])
    plot_affinity_by_depth(data, paths["depth"])
    return paths

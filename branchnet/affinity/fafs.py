"""FAFS task affinity from per-image losses (Lu et al., "Fully-adaptive Feature Sharing in
Multi-Task Networks", CVPR 2017, as Vandenhende et al. use it for their FAFS rows).

docs/design.md, "Evaluation": for task t and image n of the affinity split, ::

    e_t(n) = 1  if loss_t(n) >= mean_n loss_t(n)  (image n is "difficult" for task t), else 0
    A[i, j] = mean_n ( e_i(n) e_j(n) + (1 - e_i(n)) (1 - e_j(n)) )

the probability that the two tasks find an image concurrently easy or difficult: symmetric,
ones on the diagonal, values in [0, 1]. The measure has no notion of depth, so the same
N x N goes to every one of the D locations, and the result is an ordinary affinity file
(``measure = "fafs"``) that ``build``, ``export`` and ``evaluate`` read unchanged.

Per-image losses come from the user's own models (``branchnet affinity --measure fafs
--losses L.npz``: one (K,) array per task, key = task name, the same images in the same
order) or from branchnet's single-task models (:func:`branchnet.affinity.losses.per_image_losses`).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from branchnet.affinity.file import AffinityData, affinity_data
from branchnet.affinity.measure import Measure
from branchnet.affinity.outputs import check_out_path, write_affinity_outputs
from branchnet.errors import BadInput

#: Locations of an affinity file made from losses alone: ResNet's four stages
#: (``branchnet.nn.backbones.RESNET_LOCATIONS``), the default backbone family's branch points.
DEFAULT_LOCATIONS = ("layer1", "layer2", "layer3", "layer4")


def difficult(losses: Any) -> np.ndarray:
    """(N, K) bool ``e_t(n)``: image n's loss for task t is at least task t's mean loss."""
    x = np.asarray(losses, dtype=np.float64)
    return x >= x.mean(axis=1, keepdims=True)


def fafs_matrix(losses: Any) -> np.ndarray:
    """(N, N) float64 FAFS affinity of per-image losses (N, K): the share of images on which
    two tasks agree about being easy or difficult."""
    x = np.asarray(losses, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise BadInput(f"per-image losses must be an (N tasks, K images) array, got shape {x.shape}")
    e = difficult(x).astype(np.float64)
    agree = e @ e.T + (1.0 - e) @ (1.0 - e).T
    return agree / x.shape[1]


#: Per-image losses FAFS needs: from K = 1 or 2 images every task pair agrees or disagrees on all
#: of them, an affinity of +1s and -1s that says nothing.
MIN_IMAGES = 3


def check_losses(losses: Mapping[str, Any], source: str = "losses") -> dict[str, np.ndarray]:
    """Validate ``{task: (K,) losses}``: at least one task, the same K >= :data:`MIN_IMAGES` everywhere, finite.

    Returns the arrays as float64, in the mapping's order.
    """
    if not losses:
        raise BadInput(f"{source} holds no task; give one array of per-image losses (K,) per task")
    out: dict[str, np.ndarray] = {}
    size = None
    for task, value in losses.items():
        x = np.asarray(value)
        if x.ndim != 1:
            raise BadInput(f"{source}: '{task}' must be one loss per image, shape (K,), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise BadInput(f"{source}: '{task}' must hold real numbers (per-image losses), got {x.dtype}")
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise BadInput(f"{source}: '{task}' holds NaN or Inf; every image needs a finite loss")
        if size is None:
            size = len(x)
        elif len(x) != size:
            raise BadInput(f"{source}: '{task}' has {len(x)} images but '{next(iter(out))}' has {size}; every "
                           "task needs the losses of the same images in the same order")
        out[str(task)] = x
    if size is not None and size < MIN_IMAGES:
        raise BadInput(f"{source}: {size} image(s) is too few; FAFS needs at least {MIN_IMAGES} (from 1 or 2 the "
                       "affinity is all +1s and -1s; use the whole affinity split)")
    return out


def load_losses(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``L.npz`` of per-image losses (one (K,) array per task, key = task name)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"losses file {path} does not exist; give an .npz with one array (K,) of per-image "
                       "losses per task")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInput(f"losses file {path} is not a readable .npz ({exc})") from None
    return check_losses(arrays, f"losses file {path}")


def save_losses(path: str | os.PathLike, losses: Mapping[str, Any]) -> Path:
    """Write ``{task: (K,) losses}`` as an ``L.npz`` for ``--losses`` (validated, atomically)."""
    from branchnet.atomic import atomic_save_npz

    return atomic_save_npz(path, **check_losses(losses, str(path)))


def parse_locations(text: str | None) -> list[str]:
    """``"a,b,c,d"`` -> names (None: :data:`DEFAULT_LOCATIONS`); unique and non-empty."""
    if text is None:
        return list(DEFAULT_LOCATIONS)
    names = [part.strip() for part in text.split(",")]
    if not names or any(not n for n in names):
        raise BadInput(f"--locations '{text}' has an empty name; give comma-separated names like layer1,layer2")
    if len(set(names)) != len(names):
        raise BadInput(f"--locations '{text}' names a location twice; names must be unique")
    return names


def fafs_affinity(losses: Mapping[str, Any], locations: Sequence[str] = DEFAULT_LOCATIONS, *,
                  stage_params: Any = None, head_params: Any = None, stage_flops: Any = None,
                  head_flops: Any = None, backbone: str | None = None,
                  input_size: tuple[int, int] | None = None) -> AffinityData:
    """The FAFS :class:`AffinityData` (``measure="fafs"``) of per-image losses ``{task: (K,)}``.

    ``affinity`` is (D, N, N): :func:`fafs_matrix` at each of the D ``locations``; tasks
    in the mapping's order. Costs are optional, as in any affinity file (``build`` can take
    them from ``--stage-params``/``--head-params`` or ``--backbone --config`` instead).
    """
    checked = check_losses(losses)
    locations = list(locations)
    if not locations:
        raise BadInput("an affinity needs at least one location")
    matrix = fafs_matrix(np.stack(list(checked.values())))
    return affinity_data(
        np.repeat(matrix[None], len(locations), axis=0), list(checked), locations, "fafs",
        stage_params=stage_params, head_params=head_params, stage_flops=stage_flops, head_flops=head_flops,
        backbone=backbone, input_size=input_size,
    ).validate("FAFS affinity")


def affinity_from_losses(losses: str | os.PathLike, out: str | os.PathLike,
                         locations: Sequence[str] | None = None) -> dict[str, Path]:
    """``branchnet affinity --measure fafs --losses L.npz --out A.npz``: write the FAFS affinity
    file (no costs) with affinity.json and the figures beside it; returns their paths.
    Nothing is written when the input is bad."""
    out = check_out_path(out)
    arrays = load_losses(losses)
    data = fafs_affinity(arrays, list(locations) if locations is not None else DEFAULT_LOCATIONS)
    settings = {"measure": "fafs", "losses": str(losses), "images": int(len(next(iter(arrays.values())))),
                "difficult": "loss >= the task's mean loss over the images"}
    return write_affinity_outputs(data, out, settings)


#: FAFS: agreement of the tasks on which images are difficult, the same at every location.
FAFS = Measure("fafs", "per-image losses (N, K) of each task's model",
               lambda n, d, k: (n, k), lambda losses, tasks, locations: fafs_affinity(dict(zip(tasks, losses)),
                                                                                   locations))

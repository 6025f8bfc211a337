"""What the readers of datasets on disk share: options, paths, splits, decoding, resizing.

Splits. Each reader lists the items of its official splits by an id (a path-like name,
e.g. ``aachen_000000_000019``). Items are ordered by the SHA-1 of their id, a fixed
pseudo-random order that does not depend on the file system, on which files exist or
on the machine. The ``affinity`` split (images for task affinity only) is the
``affinity_holdout`` training items first in that order; they are removed from
``train``. A cap in ``data.splits`` keeps the first N items of a split in the same
order, so a capped split is a spread-out sample of the whole one (every city or
building), and the same cap always gives the same images.

Resizing (to ``data.image_size``): images bilinearly (PIL), every label with nearest
neighbour (:func:`resize_nearest`, which keeps ignore values and integer ids exact);
unit normals are renormalised after resizing (the zero vector stays zero).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from branchnet.errors import BadInput, did_you_mean


def check_options(dataset: str, options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``options``; :class:`BadInput` for an unknown key."""
    for key in options:
        if key not in defaults:
            raise BadInput(f"unknown {dataset} option 'data.options.{key}'{did_you_mean(str(key), defaults)}; "
                           f"valid: {', '.join(defaults) or 'none'}")
    return {**defaults, **options}


def nonnegative_int(dataset: str, options: dict[str, Any], key: str) -> int:
    """``options[key]`` checked to be an integer >= 0."""
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"{dataset} option 'data.options.{key}' must be a whole number >= 0, got {value!r}")
    return value


def choice(dataset: str, options: dict[str, Any], key: str, choices: Sequence[str]) -> str:
    """``options[key]`` checked to be one of ``choices``."""
    value = options[key]
    if value not in choices:
        raise BadInput(f"{dataset} option 'data.options.{key}' is {value!r}{did_you_mean(str(value), choices)}; "
                       f"valid: {', '.join(choices)}")
    return value


def dataset_root(root: str | None, dataset: str, layout: str) -> Path:
    """``data.root`` as a directory; :class:`BadInput` naming the expected layout otherwise."""
    if not root:
        raise BadInput(f"data.root is not set; point it at the {dataset} root ({layout})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise BadInput(f"{dataset}: data.root {path} is not a directory; expected {layout}")
    return path


def missing(path: Path, dataset: str, layout: str, hint: str = "") -> BadInput:
    """The error for a file or folder of the layout that is not there."""
    return BadInput(f"{dataset}: missing {path}; expected {layout}{hint}")


def require(path: Path, dataset: str, layout: str) -> Path:
    """``path`` if it exists, else :func:`missing`."""
    if not path.exists():
        raise missing(path, dataset, layout)
    return path


def list_dir(path: Path) -> set[str]:
    """Names in directory ``path`` (empty when it does not exist)."""
    try:
        return set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return set()


# --------------------------------------------------------------------------------------
# Splits


def hash_order(ids: Iterable[str]) -> list[str]:
    """``ids`` sorted by the SHA-1 of their UTF-8 bytes (ties impossible for distinct ids)."""
    return sorted(ids, key=lambda i: hashlib.sha1(i.encode("utf-8")).hexdigest())


def split_ids(split: str, official: Iterable[str], holdout: int, cap: int | None, dataset: str) -> list[str]:
    """Ids of branchnet split ``split`` from the ids of the official split it comes from.

    ``official`` is the training split for ``train`` and ``affinity``: its first
    ``holdout`` ids in hash order are ``affinity``, the rest ``train``. ``cap`` (None =
    all) keeps the first ids of the result.
    """
    ordered = hash_order(set(official))
    if split in ("train", "affinity"):
        if holdout >= len(ordered):
            raise BadInput(f"{dataset}: data.options.affinity_holdout is {holdout} but the training split has only "
                           f"{len(ordered)} images; hold out fewer")
        ordered = ordered[holdout:] if split == "train" else ordered[:holdout]
    return ordered if cap is None else ordered[:cap]


# --------------------------------------------------------------------------------------
# Decoding


def _open(path: Path, convert: str | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(convert) if convert else image)
    except FileNotFoundError:
        raise BadInput(f"missing {path}") from None
    except OSError as exc:
        raise BadInput(f"{path} is not a readable image ({exc})") from None


def read_image(path: Path) -> np.ndarray:
    """An image file's stored values: labels stay ids (palette PNGs give their indices).

    8-bit grey or palette (H, W) uint8, 16-bit grey (H, W) uint16, RGB (H, W, 3) uint8.
    """
    array = _open(path, None)
    if array.dtype.kind in "iu" and array.dtype.itemsize > 2 and array.size and array.min() >= 0 \
            and array.max() < 65536:
        array = array.astype(np.uint16)  # 16-bit PNGs may open in PIL's 32-bit mode "I"
    elif array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def read_rgb(path: Path) -> np.ndarray:
    """An image as RGB uint8 (H, W, 3) (grey and palette images converted)."""
    return np.ascontiguousarray(_open(path, "RGB"))


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array; :class:`BadInput` when missing or unreadable."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BadInput(f"missing {path}") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path} is not a readable .npy array ({exc})") from None


# --------------------------------------------------------------------------------------
# Resizing


def resize_rgb(array: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> uint8 tensor (3, h, w) at ``size`` = (h, w), bilinear."""
    from PIL import Image

    h, w = size
    if array.shape[:2] != (h, w):
        array = np.asarray(Image.fromarray(array).resize((w, h), Image.BILINEAR))
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` output samples (centre-aligned nearest neighbour)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, ...) -> (h, w, ...) by nearest neighbour; values are copied, never blended."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    rows = nearest_index(array.shape[0], h)
    cols = nearest_index(array.shape[1], w)
    return array[rows][:, cols]


def unit_normals(normals: np.ndarray) -> torch.Tensor:
    """(H, W, 3) normals -> float32 (3, H, W) of unit length; near-zero vectors become 0 (missing)."""
    normals = normals.astype(np.float32)
    norm = np.linalg.norm(normals, axis=2, keepdims=True)
    valid = norm > 0.5
    unit = np.where(valid, normals / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(unit)).permute(2, 0, 1).contiguous()


def label_tensor(array: np.ndarray) -> torch.Tensor:
    """Class ids (H, W) -> int64 tensor."""
    return torch.from_numpy(np.array(array, dtype=np.int64))


def map_tensor(array: np.ndarray) -> torch.Tensor:
    """A one-channel map (H, W) -> float32 tensor (1, H, W)."""
    return torch.from_numpy(np.array(array, dtype=np.float32))[None]

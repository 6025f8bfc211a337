"""The affinity file (``affinity.npz``): one validated reader and one writer.

Format (docs/design.md, "File formats"): ``affinity`` float64 (D, N, N); ``tasks`` str (N,);
``locations`` str (D,); optional ``stage_params`` int64 (D,), ``head_params`` int64 (N,),
``stage_flops`` (D,), ``head_flops`` (N,) per image at the configured input size,
``rdms`` float32 (N, D, K, K), ``affinity_std`` (D, N, N). branchnet also records the
optional ``backbone`` (str) and ``input_size`` int64 (2,) the costs were measured for, and
``measure`` (str): which affinity made the file (docs/design.md, "Evaluation": ``"rsa"``,
``"fafs"``, ``"tag"``, ...); a file without it reads as ``"rsa"``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from branchnet.errors import BadInput
from branchnet.atomic import atomic_save_npz

#: Symmetry and unit-diagonal tolerance when reading an affinity file.
AFFINITY_ATOL = 1e-6


@dataclass
class AffinityData:
    """Task affinities at D locations for N tasks, with the costs that go with them.

    Attributes:
        affinity: (D, N, N) float64, ``A[d, i, j]`` = Spearman between the RDMs of tasks
            i and j at location d; symmetric with ones on the diagonal.
        tasks: N task names.
        locations: D branch-point names (shallow to deep).
        stage_params: (D,) parameters of each encoder stage, or None.
        head_params: (N,) parameters of each task head, or None.
        stage_flops: (D,) FLOPs of each stage per image, or None.
        head_flops: (N,) FLOPs of each head per image, or None.
        rdms: (N, D, K, K) float32 RDMs, or None.
        affinity_std: (D, N, N) bootstrap standard deviation, or None.
        backbone: name of the backbone the costs belong to, or None.
        input_size: (H, W) the FLOPs were counted at, or None.
        extra: any other arrays found in the file (kept on re-save).
        measure: the affinity measure that made ``affinity`` (``"rsa"``, ``"fafs"``, ``"tag"``...).
    """

    affinity: np.ndarray
    tasks: list[str]
    locations: list[str]
    stage_params: np.ndarray | None = None
    head_params: np.ndarray | None = None
    stage_flops: np.ndarray | None = None
    head_flops: np.ndarray | None = None
    rdms: np.ndarray | None = None
    affinity_std: np.ndarray | None = None
    backbone: str | None = None
    input_size: tuple[int, int] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    measure: str = "rsa"

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_locations(self) -> int:
        return len(self.locations)

    def validate(self, source: str = "affinity") -> "AffinityData":
        """Check shapes, symmetry, unit diagonal, finiteness and unique names.

        Raises :class:`BadInput` naming ``source`` and what is wrong.
        """
        a = np.asarray(self.affinity)
        if a.dtype.kind == "c":
            raise BadInput(f"{source}: 'affinity' holds complex numbers; it must hold real correlations in [-1, 1]")
        if a.dtype.kind not in "fiu":
            raise BadInput(f"{source}: 'affinity' must hold numbers (float64), not {a.dtype} values")
        if a.ndim != 3 or a.shape[1] != a.shape[2]:
            raise BadInput(f"{source}: 'affinity' must have shape (D, N, N), got {a.shape}")
        d, n, _ = a.shape
        if d == 0 or n == 0:
            raise BadInput(f"{source}: 'affinity' has shape {a.shape}: it needs at least one location (D) "
                           "and one task (N)")
        if len(self.tasks) != n:
            raise BadInput(f"{source}: 'tasks' has {len(self.tasks)} names but 'affinity' is for N={n} tasks")
        if len(self.locations) != d:
            raise BadInput(f"{source}: 'locations' has {len(self.locations)} names but 'affinity' has D={d}")
        for kind, names in (("task", self.tasks), ("location", self.locations)):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise BadInput(f"{source}: {kind} '{name}' is named twice; names must be unique")
                seen.add(name)
        if not np.all(np.isfinite(a)):
            raise BadInput(f"{source}: 'affinity' holds NaN or Inf; recompute it")
        asym = float(np.max(np.abs(a - a.transpose(0, 2, 1)))) if a.size else 0.0
        if asym > AFFINITY_ATOL:
            raise BadInput(f"{source}: 'affinity' is not symmetric (max |A - A^T| = {asym:.3g}); "
                           "each A[d] must equal its transpose")
        diag = np.diagonal(a, axis1=1, axis2=2)
        if diag.size and float(np.max(np.abs(diag - 1.0))) > AFFINITY_ATOL:
            raise BadInput(f"{source}: 'affinity' diagonal must be 1 (a task is fully similar to itself)")
        if a.size and (a.min() < -1 - AFFINITY_ATOL or a.max() > 1 + AFFINITY_ATOL):
            raise BadInput(f"{source}: 'affinity' values must lie in [-1, 1] (Spearman correlations)")
        for key, expect in (("stage_params", (d,)), ("stage_flops", (d,)),
                            ("head_params", (n,)), ("head_flops", (n,)), ("affinity_std", (d, n, n))):
            value = getattr(self, key)
            if value is None:
                continue
            value = np.asarray(value)
            if value.dtype.kind not in "fiu":
                raise BadInput(f"{source}: '{key}' must hold real numbers, not {value.dtype} values")
            if value.shape != expect:
                raise BadInput(f"{source}: '{key}' must have shape {expect}, got {value.shape}")
            if not np.all(np.isfinite(value)) or (key != "affinity_std" and np.any(value < 0)):
                raise BadInput(f"{source}: '{key}' must hold finite non-negative numbers")
        if not isinstance(self.measure, str) or not self.measure.strip():
            raise BadInput(f"{source}: 'measure' must name the affinity measure (e.g. rsa, fafs), "
                           f"got {self.measure!r}")
        if self.rdms is not None:
            r = np.asarray(self.rdms)
            if r.ndim != 4 or r.shape[:2] != (n, d) or r.shape[2] != r.shape[3]:
                raise BadInput(f"{source}: 'rdms' must have shape (N={n}, D={d}, K, K), got {r.shape}")
        self.affinity = a.astype(np.float64, copy=False)
        return self


def affinity_data(affinity: Any, tasks: Sequence[str], locations: Sequence[str], measure: str, *,
                  stage_params: Any = None, head_params: Any = None, stage_flops: Any = None,
                  head_flops: Any = None, backbone: str | None = None, input_size: Sequence[int] | None = None,
                  **fields: Any) -> AffinityData:
    """An :class:`AffinityData` of any measure, the costs in the file's dtypes: ``affinity`` (D, N, N)
    float64, ``stage_params`` (D,) and ``head_params`` (N,) int64, ``stage_flops`` (D,) and
    ``head_flops`` (N,) float64, ``input_size`` (H, W); ``fields`` are the other attributes
    (``rdms``, ``affinity_std``, ``extra``). Not validated: the caller names its source."""

    def array(value: Any, dtype: type) -> np.ndarray | None:
        return None if value is None else np.asarray(value, dtype=dtype)

    return AffinityData(
        affinity=np.asarray(affinity, dtype=np.float64), tasks=list(tasks), locations=list(locations),
        stage_params=array(stage_params, np.int64), head_params=array(head_params, np.int64),
        stage_flops=array(stage_flops, np.float64), head_flops=array(head_flops, np.float64),
        backbone=backbone, input_size=tuple(int(v) for v in input_size) if input_size is not None else None,
        measure=measure, **fields)


_KNOWN = {"affinity", "tasks", "locations", "stage_params", "head_params", "stage_flops", "head_flops",
          "rdms", "affinity_std", "backbone", "input_size", "measure"}


def save_affinity(path: str | os.PathLike, data: AffinityData) -> Path:
    """Validate ``data`` and write it to ``path`` (``.npz``) atomically."""
    data.validate(str(path))
    arrays: dict[str, np.ndarray] = {
        "affinity": np.asarray(data.affinity, dtype=np.float64),
        "tasks": np.asarray(data.tasks, dtype=str),
        "locations": np.asarray(data.locations, dtype=str),
        "measure": np.asarray(data.measure, dtype=str),
    }
    for key in ("stage_params", "head_params"):
        if getattr(data, key) is not None:
            arrays[key] = np.asarray(getattr(data, key), dtype=np.int64)
    for key in ("stage_flops", "head_flops", "affinity_std"):
        if getattr(data, key) is not None:
            arrays[key] = np.asarray(getattr(data, key), dtype=np.float64)
    if data.rdms is not None:
        arrays["rdms"] = np.asarray(data.rdms, dtype=np.float32)
    if data.backbone is not None:
        arrays["backbone"] = np.asarray(data.backbone, dtype=str)
    if data.input_size is not None:
        arrays["input_size"] = np.asarray(data.input_size, dtype=np.int64)
    arrays.update({k: v for k, v in data.extra.items() if k not in arrays})
    return atomic_save_npz(path, **arrays)


def load_affinity(path: str | os.PathLike) -> AffinityData:
    """Read and validate an ``affinity.npz``; :class:`BadInput` on any defect."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"affinity file {path} does not exist; create it with `branchnet affinity`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInput(f"affinity file {path} is not a readable .npz ({exc}); recreate it") from None
    missing = [k for k in ("affinity", "tasks", "locations") if k not in arrays]
    if missing:
        raise BadInput(f"affinity file {path} lacks key(s) {', '.join(missing)}; "
                       "it needs 'affinity' (D,N,N), 'tasks' (N,), 'locations' (D,)")

    def names(key: str) -> list[str]:
        value = arrays[key]
        if value.ndim != 1:
            raise BadInput(f"affinity file {path}: '{key}' must be a 1-D array of names, got shape {value.shape}")
        return [str(v) for v in value.tolist()]

    input_size = arrays.get("input_size")
    measure = arrays.get("measure")
    if measure is not None and measure.ndim != 0:
        raise BadInput(f"affinity file {path}: 'measure' must be one name (a 0-d string), got shape {measure.shape}")
    data = AffinityData(
        affinity=arrays["affinity"],
        tasks=names("tasks"),
        locations=names("locations"),
        stage_params=arrays.get("stage_params"),
        head_params=arrays.get("head_params"),
        stage_flops=arrays.get("stage_flops"),
        head_flops=arrays.get("head_flops"),
        rdms=arrays.get("rdms"),
        affinity_std=arrays.get("affinity_std"),
        backbone=str(arrays["backbone"]) if "backbone" in arrays else None,
        input_size=tuple(int(v) for v in input_size.tolist()) if input_size is not None else None,
        extra={k: v for k, v in arrays.items() if k not in _KNOWN},
        measure=str(measure) if measure is not None else "rsa",
    )
    return data.validate(f"affinity file {path}")

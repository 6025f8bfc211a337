"""Representation dissimilarity matrices (RDMs), streamed from a feature source.

Definition (docs/design.md; Vandenhende et al., Sec. 3.1): for one task's model, location d
and K images, flatten each image's feature map to a vector x_a and set
``RDM[d, a, b] = 1 - pearson(x_a, x_b)``.

``center="images"`` (the paper's definition, the default): each image vector is centred
and scaled to unit norm as it arrives, z_a = (x_a - mean(x_a)) / ||x_a - mean(x_a)||, so
that ``pearson(x_a, x_b) = z_a . z_b`` and the RDM is ``1 - Z Z^T``: one matrix product per
block, nothing else held. ``center="features"`` follows Dwivedi & Roig's code: each
feature's mean over the K images is subtracted first, then Pearson per image pair. That
needs the whole block: rows are centred as they arrive and kept, their feature sums
accumulated; when the block is complete the feature means are subtracted, the rows
centred again (which moves them by rounding only), ``C = Z Z^T`` and
``pearson = C_ab / sqrt(C_aa C_bb)``. Z is the doubly centred block
``(I - 11^T/K) X (I - 11^T/F)``, exactly the vectors Pearson compares.

Streaming and memory. Only the blocks of the RDMs at hand are held: a (task, location)
block is K x F float32 values. When the D blocks of a task fit in ``max_memory`` the source
is iterated once for the task; otherwise the locations are packed into passes that fit
(one pass per location at worst). A block larger than ``max_memory`` on its own is spilled
to a float32 file in ``spill_dir`` and its Gram matrix computed tile by tile
(:mod:`branchnet.rsa.gram`). On a GPU the blocks live in GPU memory and everything up to
the affinity runs there with torch (:mod:`branchnet.rsa.device`, the ``"torch"`` backend);
on the CPU numpy does the work (the ``"numpy"`` backend: BLAS ``syrk`` products, row work
split over as many threads as there are free cores, :func:`branchnet.machine.free_cores`).

Precision: blocks and products are float32, statistics per image are float32 with a
float64 fallback for rows where float32 would lose digits; RDMs agree with
``1 - np.corrcoef`` in float64 to about 1e-6.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from branchnet.machine import available_ram, free_cores, thread_limit
from branchnet.devices import resolve_device
from branchnet.errors import BadInput, unknown_choice
from branchnet.rsa import device as on_device
from branchnet.rsa.gram import SpillFile, gram, gram_from_file, product, products_with_file, read_rows, tile_rows
from branchnet.rsa.sources import FeatureSource

CENTERS = ("images", "features")
#: How blocks are processed: ``numpy`` (CPU tensors, numpy and BLAS) or ``torch`` (any
#: device; the GPU path).
BACKENDS = ("numpy", "torch")
#: Smallest K for which an RDM comparison means anything.
MIN_IMAGES = 4
#: Share of free memory (RAM, or GPU memory on a GPU) used when ``max_memory`` is not given.
MEMORY_SHARE = 0.5
#: A row whose spread is below this fraction of its mean is centred in float64.
_WEAK_ROW = 1e-2

_POOL = re.compile(r"^\s*avg\s*:\s*([0-9]+)\s*$", re.IGNORECASE)


def parse_pool(text: str | int | None) -> int | None:
    """``"none"`` -> None, ``"avg:S"`` -> S (adaptive average pooling to S x S); else BadInput."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none")):
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = _POOL.match(str(text))
        if not match:
            raise BadInput(f"--pool '{text}' is not understood; use 'none' or 'avg:S' with S a positive "
                           "integer (e.g. avg:8)")
        size = int(match.group(1))
    if size < 1:
        raise BadInput(f"--pool '{text}': the pooled size S must be at least 1 (e.g. avg:8)")
    return size


def check_center(center: str) -> str:
    """Validate a centring mode ("images" or "features")."""
    if center not in CENTERS:
        raise unknown_choice("--center mode", str(center), CENTERS)
    return center


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """``numpy`` on the CPU and ``torch`` elsewhere unless ``backend`` says (``numpy`` needs the CPU)."""
    if backend is None:
        return "numpy" if device.type == "cpu" else "torch"
    if backend not in BACKENDS:
        raise unknown_choice("RSA backend", str(backend), BACKENDS)
    if backend == "numpy" and device.type != "cpu":
        raise BadInput(f"the numpy RSA backend runs on the CPU only, not on {device}; use backend='torch'")
    return backend


def default_max_memory(device: torch.device | str = "cpu") -> int:
    """Bytes the feature blocks may take: a share of free GPU memory, or of available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(MEMORY_SHARE * free)
    return int(MEMORY_SHARE * available_ram())


def plan_passes(block_bytes: Sequence[int], budget: int) -> tuple[list[list[int]], set[int]]:
    """Group locations into passes over the source whose blocks fit in ``budget`` bytes together.

    Returns (passes, spilled): each pass lists location indices in order; ``spilled`` holds
    the locations whose block alone exceeds the budget (they go to a spill file during the
    first pass and take no memory there).
    """
    spilled = {d for d, size in enumerate(block_bytes) if size > budget}
    passes: list[list[int]] = []
    current: list[int] = []
    used = 0
    for d, size in enumerate(block_bytes):
        if d in spilled:
            continue
        if current and used + size > budget:
            passes.append(current)
            current, used = [], 0
        current.append(d)
        used += size
    if current or not passes:
        passes.append(current)
    passes[0] = sorted(passes[0] + sorted(spilled))
    return passes, spilled


# ---------------------------------------------------------------------------------------------
# Turning one batch entry into (B, F) float32 rows
# ---------------------------------------------------------------------------------------------

def flatten_entry(entry: Any, pool: int | None, device: torch.device, take: int | None = None) -> torch.Tensor:
    """One batch entry -> (B, F) float32 tensor on ``device``.

    An array/tensor (B, ...) is flattened per image; a 4-D map (B, C, H, W) is first
    adaptive-average-pooled to (B, C, S, S) when ``pool`` is S. A list of maps (HRNet) is
    treated part by part and the parts concatenated along the feature axis. ``take`` keeps
    only the first rows.
    """
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise BadInput("a feature source yielded an empty list of maps for one location")
        parts = [flatten_entry(part, pool, device, take) for part in entry]
        sizes = {p.shape[0] for p in parts}
        if len(sizes) != 1:
            raise BadInput(f"the maps of one location cover different numbers of images {sorted(sizes)}")
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    x = _as_tensor(entry)
    if take is not None:
        x = x[:take]
    if x.ndim < 2:
        raise BadInput(f"features must have shape (B, ...) with at least one value per image, got {tuple(x.shape)}")
    x = x.to(device=device, dtype=torch.float32)
    if pool is not None and x.ndim == 4:
        x = F.adaptive_avg_pool2d(x, pool)
    return x.reshape(x.shape[0], -1).contiguous()


def _as_tensor(entry: Any) -> torch.Tensor:
    if isinstance(entry, torch.Tensor):
        return entry.detach()
    array = np.asarray(entry)
    if array.dtype.kind not in "biuf":
        raise BadInput(f"features must be numbers, got an array of dtype {array.dtype}")
    if array.dtype != np.float32 or not array.dtype.isnative:
        array = array.astype(np.float32)
    with warnings.catch_warnings():  # read-only arrays are fine: they are never written
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


# ---------------------------------------------------------------------------------------------
# Threads for memory-bound numpy work
# ---------------------------------------------------------------------------------------------

_THREADS: ThreadPoolExecutor | None = None


def parallel_rows(work: Callable[[int, int], None], rows: int) -> None:
    """Run ``work(lo, hi)`` over [0, rows) split across ``torch.get_num_threads()`` threads.

    numpy releases the GIL in its loops, so memory-bound row operations scale with the
    threads the user allows torch (and BLAS) to use; with one thread this is a plain call.
    """
    global _THREADS
    threads = max(1, min(torch.get_num_threads(), rows, 8))
    if threads == 1:
        work(0, rows)
        return
    if _THREADS is None or _THREADS._max_workers < threads:
        _THREADS = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="branchnet-rsa")
    bounds = np.linspace(0, rows, threads + 1).astype(int)
    for future in [_THREADS.submit(work, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]:
        future.result()


# ---------------------------------------------------------------------------------------------
# Reusable block memory
# ---------------------------------------------------------------------------------------------

class Workspace:
    """Block buffers reused from one (task, location) block to the next.

    Touching freshly allocated memory costs page faults: on the development machine
    writing a new 125 MiB block took 4x as long as rewriting a used one. Buffers released
    here are handed out again for blocks of the same or a smaller size; before a new one
    is allocated every idle buffer is freed, so the memory held never exceeds what the
    blocks in use need plus the one being allocated.
    """

    def __init__(self) -> None:
        self._idle: list[torch.Tensor] = []

    def take(self, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """A float32 tensor of ``shape`` on ``device`` (contents undefined)."""
        numel = shape[0] * shape[1]
        fits = [b for b in self._idle if b.device == device and b.numel() >= numel]
        if fits:
            buffer = min(fits, key=lambda b: b.numel())
            self._idle.remove(buffer)
        else:
            self._idle.clear()
            if device.type == "cpu":
                # numpy asks the kernel for huge pages on large arrays: far fewer page faults.
                buffer = torch.from_numpy(np.empty(numel, dtype=np.float32))
            else:
                buffer = torch.empty(numel, dtype=torch.float32, device=device)
        return buffer[:numel].view(shape)

    def give_back(self, tensor: torch.Tensor) -> None:
        """Return a tensor from :meth:`take` for reuse."""
        base = tensor._base if tensor._base is not None else tensor
        if all(base is not idle for idle in self._idle):
            self._idle.append(base)

    def clear(self) -> None:
        self._idle.clear()


# ---------------------------------------------------------------------------------------------
# One (task, location) block
# ---------------------------------------------------------------------------------------------

class _Block:
    """Accumulates the K rows of one (task, location) and turns them into an RDM.

    Every row is centred as it arrives (its mean over features subtracted) and stored in
    a float32 tensor on ``device`` or, when ``spill`` is given, in a spill file. With
    ``center="images"`` the RDM is then ``1 - G_ab / sqrt(G_aa G_bb)`` from the one product
    ``G = Z Z^T`` (scaling each row to unit norm is folded into this O(K^2) step instead
    of another pass over the features). With ``center="features"`` the feature sums are
    accumulated too and the feature means subtracted when the block is complete.
    """

    def __init__(self, k: int, f: int, center: str, device: torch.device, task: str, location: str,
                 spill: SpillFile | None, budget: int, workspace: Workspace, backend: str = "numpy"):
        self.k, self.f, self.center, self.device = k, f, center, device
        self.numpy = backend == "numpy"
        self.task, self.location = task, location
        self.spill, self.budget, self.workspace = spill, budget, workspace
        self.z = None if spill is not None else workspace.take((k, f), device)
        self._scratch: torch.Tensor | None = None  # (B, F) rows in flight (spill, feature sums)
        # Each row's mean over features, as subtracted (for the precision check in rdm());
        # with torch, kept on the device and checked for NaN/Inf once, in rdm().
        self.row_mean = (np.zeros(k, dtype=np.float64) if self.numpy
                         else torch.zeros(k, dtype=torch.float64, device=device))
        # center="features": the sum over images of (z_a - z_0), z_0 the first centred row.
        # The differences are small next to large feature means, so float32 partial sums
        # keep their digits; the feature mean is z_0 + column_sum / K.
        self.column_sum = (torch.zeros(f, dtype=torch.float64, device=device)
                           if center == "features" else None)
        self.first_row: torch.Tensor | None = None
        self.filled = 0

    def _where(self, row: int) -> str:
        return f"task '{self.task}' at location '{self.location}', image {row} (0-based)"

    def add(self, x: torch.Tensor) -> None:
        """Append (B, F) float32 rows on the block's device."""
        b, start = x.shape[0], self.filled
        if x.shape[1] != self.f:
            raise BadInput(f"features of task '{self.task}' at location '{self.location}' have {x.shape[1]} "
                           f"values for image {start} but {self.f} for image 0; every image needs the same shape")
        if self.z is not None:
            dest = self.z[start:start + b]
        else:
            dest = self._scratch_rows(b)
        self.row_mean[start:start + b] = self._centre(x, dest, start)
        if self.column_sum is not None:
            if self.first_row is None:
                self.first_row = dest[0].clone()
            diff = self._scratch_rows(b) if self.z is not None else torch.empty_like(dest)
            if self.numpy:
                np.subtract(dest.numpy(), self.first_row.numpy(), out=diff.numpy())
                self.column_sum.numpy()[:] += diff.numpy().sum(axis=0)
            else:
                torch.sub(dest, self.first_row, out=diff)
                self.column_sum += diff.sum(dim=0)
        if self.spill is not None:
            self.spill.append(dest.cpu().numpy())
        self.filled += b

    def _scratch_rows(self, b: int) -> torch.Tensor:
        if self._scratch is None or self._scratch.shape[0] < b:
            if self._scratch is not None:
                self.workspace.give_back(self._scratch)
            self._scratch = self.workspace.take((b, self.f), self.device)
        return self._scratch[:b]

    def release(self) -> None:
        """Give the block's memory back to the workspace and remove its spill file."""
        for buffer in (self.z, self._scratch):
            if buffer is not None:
                self.workspace.give_back(buffer)
        self.z = self._scratch = None
        if self.spill is not None:
            self.spill.close()

    def _centre(self, x: torch.Tensor, dest: torch.Tensor, start: int) -> np.ndarray | torch.Tensor:
        """dest = x - mean(x) per row (two passes over the batch); returns the (B,) means.

        numpy: raises BadInput for rows holding NaN or Inf, or values so large that float32
        sums overflow; runs on views of the tensors, the rows split over the free cores'
        threads. torch: nothing is read back (the means are checked in :meth:`rdm`).
        """
        if self.numpy:
            xs, ds = x.numpy(), dest.numpy()
            mean = np.empty(xs.shape[0], dtype=np.float32)

            def centre(lo: int, hi: int) -> None:
                with np.errstate(all="ignore"):  # NaN/Inf/overflow are reported below
                    mean[lo:hi] = xs[lo:hi].sum(axis=1) / self.f
                    np.subtract(xs[lo:hi], mean[lo:hi, None], out=ds[lo:hi])

            parallel_rows(centre, xs.shape[0])
            self._check_finite(x, np.flatnonzero(~np.isfinite(mean)), start)
            return mean.astype(np.float64)
        mean_t = x.sum(dim=1) / self.f
        torch.sub(x, mean_t.unsqueeze(1), out=dest)
        return mean_t.double()

    def _check_finite(self, x: torch.Tensor, rows: Sequence[int], start: int) -> None:
        for r in rows:
            r = int(r)
            if not bool(torch.isfinite(x[r]).all()):
                raise BadInput(f"features of {self._where(start + r)} hold NaN or Inf; "
                               "check the model or the features file")
            raise BadInput(f"features of {self._where(start + r)} are too large for float32 sums "
                           "(|x| above ~1e18); rescale them")

    def rdm(self) -> np.ndarray | torch.Tensor:
        """The (K, K) float64 RDM (numpy, or a tensor on the device with torch); frees the block."""
        if not self.numpy:
            try:
                on_device.check_row_means(self.row_mean, self._where)
                if self.spill is None:
                    return self._rdm_torch()
                self.row_mean = self.row_mean.cpu().numpy()  # a spilled block goes the numpy way
            except BaseException:
                self.release()
                raise
            return torch.from_numpy(self._rdm_numpy()).to(self.device)
        return self._rdm_numpy()

    def _rdm_torch(self) -> torch.Tensor:
        try:
            if self.center == "features":
                self._feature_transform()(self.z)
            g = on_device.gram(self.z)
            if self.center == "images":
                g = on_device.fix_weak_rows(g, self.z, self.row_mean, self._where)
        finally:
            self.release()
        return on_device.rdm_from_gram(g, self.center, self._where, self.task, self.location)

    def _rdm_numpy(self) -> np.ndarray:
        try:
            if self.spill is not None:
                self.spill.finish()
                rows = tile_rows(self.f, self.budget)
                transform = self._feature_transform() if self.center == "features" else None
                g = gram_from_file(self.spill.path, (self.k, self.f), rows, self.device, transform)
                if self.center == "images":
                    g = self._fix_weak_rows(g, lambda idx: read_rows(self.spill.path, (self.k, self.f), idx),
                                            lambda w: products_with_file(self.spill.path, (self.k, self.f), w,
                                                                         rows, self.device))
            else:
                if self.center == "features":
                    self._feature_transform()(self.z)
                g = gram(self.z)
                if self.center == "images":
                    z = self.z
                    g = self._fix_weak_rows(g, lambda idx: z[torch.as_tensor(idx, device=z.device)].cpu().numpy(),
                                            lambda w: product(torch.from_numpy(w).to(z.device), z))
        finally:
            self.release()
        if not np.all(np.isfinite(g)):
            raise BadInput(f"features of task '{self.task}' at location '{self.location}' are too large for "
                           "float32 products (|x| above ~1e18); rescale them")
        diag = np.diagonal(g).copy()
        if self.center == "features":
            scale = float(np.max(diag)) if diag.size else 0.0
            flat = np.flatnonzero(diag <= 1e-10 * scale) if scale > 0 else np.arange(self.k)
            if flat.size:
                raise BadInput(f"features of {self._where(int(flat[0]))} equal the mean image up to a constant, "
                               "so Pearson correlation after --center features is undefined; "
                               "use --center images or other images")
        inv = 1.0 / np.sqrt(diag)
        rdm = 1.0 - g * np.outer(inv, inv)
        rdm = 0.5 * (rdm + rdm.T)  # exactly symmetric whatever the product's rounding
        np.clip(rdm, 0.0, 2.0, out=rdm)
        np.fill_diagonal(rdm, 0.0)
        return rdm

    def _fix_weak_rows(self, g: np.ndarray, get_rows: Callable[[np.ndarray], np.ndarray],
                       products: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Redo, in float64, the rows whose spread is tiny next to their mean (and check for constants).

        A stored row is x - m32 with m32 the float32 mean: exact, but its mean is off by
        the rounding of m32, which matters (to first order it does not, to second order it
        does) only when the spread is below ~1% of the mean. Those rows are re-centred in
        float64 and their row and column of G recomputed. A row that re-centres to zero
        was constant: Pearson is undefined.
        """
        norm = np.sqrt(np.maximum(np.diagonal(g), 0.0))
        with np.errstate(invalid="ignore"):
            weak = ~np.isfinite(norm) | (norm <= _WEAK_ROW * math.sqrt(self.f) * np.abs(self.row_mean))
        idx = np.flatnonzero(weak)
        if idx.size == 0:
            return g
        rows = get_rows(idx).astype(np.float64)
        rows -= rows.mean(axis=1, keepdims=True)
        for i, r in enumerate(idx):
            if not rows[i].any():
                raise BadInput(f"features of {self._where(int(r))} are constant, so Pearson correlation "
                               "is undefined; drop that image or choose another location")
        fixed = rows.astype(np.float32)
        cross = products(fixed)  # (w, K): fixed rows against every stored row
        g[idx, :] = cross
        g[:, idx] = cross.T
        exact = fixed.astype(np.float64)
        g[np.ix_(idx, idx)] = exact @ exact.T
        return g

    def _feature_transform(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """In-place map of centred rows (T, F): subtract each feature's mean over the K images.

        The mean is x_0 + offset; subtracting x_0, then the small offset, loses no digits
        when the means are large next to the spread over images. The rows are centred
        again afterwards (their means moved by rounding only), which keeps the column
        means at zero: the result is the doubly centred block.
        """
        first, offset = self.first_row, (self.column_sum / self.k).float()

        def transform(z: torch.Tensor) -> torch.Tensor:
            if self.numpy:
                zs = z.numpy()
                zs -= first.numpy()
                zs -= offset.numpy()
                zs -= zs.mean(axis=1, keepdims=True)
            else:
                z -= first
                z -= offset
                z -= z.mean(dim=1, keepdim=True)
            return z

        return transform


# ---------------------------------------------------------------------------------------------
# The RDMs of one task
# ---------------------------------------------------------------------------------------------

def num_images(source: FeatureSource, images: int | None) -> int:
    """The K to use: ``images`` (the first K of the source) or all of them; BadInput if out of range."""
    available = int(source.num_images)
    k = available if images is None else int(images)
    if images is not None and k > available:
        raise BadInput(f"--images {k} asks for more images than the features cover (K={available}); "
                       f"use --images {available} or fewer")
    if k < MIN_IMAGES:
        raise BadInput(f"RDMs need at least K={MIN_IMAGES} images, got K={k}; use more images")
    return k


def compute_rdms(source: FeatureSource, task: str, *, images: int | None = None, center: str = "images",
                 pool: int | None = None, max_memory: int | None = None,
                 spill_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 on_batch: Callable[[int], None] | None = None,
                 workspace: Workspace | None = None, backend: str | None = None) -> np.ndarray:
    """The RDMs of ``task`` at every location of ``source``, streamed.

    Args:
        source: a :class:`~branchnet.rsa.sources.FeatureSource`.
        task: one of ``source.tasks``.
        images: use the first K images (default: all ``source.num_images``); K >= 4.
        center: ``"images"`` (centre each image vector: the paper's definition) or
            ``"features"`` (first subtract each feature's mean over the K images).
        pool: S to adaptive-average-pool 4-D maps (B, C, H, W) to S x S first, or None.
        max_memory: bytes the feature blocks may take at once (default: half of the
            available RAM, or of free GPU memory on a GPU). Blocks larger than this are
            spilled to disk.
        spill_dir: directory for spill files (default: the system's temporary directory).
        device: ``"cpu"`` or ``"cuda"``: where blocks are held and products run.
        on_batch: called with the number of images of each batch consumed (progress).
        workspace: a :class:`Workspace` to reuse block memory across calls (one per run).
        backend: ``"numpy"`` (the CPU default) or ``"torch"`` (the default elsewhere;
            on the CPU it runs the GPU path's code on CPU tensors).

    Returns:
        (D, K, K) float64 RDMs, symmetric with zero diagonals, values in [0, 2].

    Raises:
        BadInput: K < 4 or more than the source has; an image whose features are constant
            (``center="images"``) or equal to the mean image up to a constant
            (``center="features"``); NaN or Inf; features whose shape changes between images;
            a source that ends early. Messages name the task, location and image.
    """
    rdms = rdms_on_device(source, task, images=images, center=center, pool=pool, max_memory=max_memory,
                          spill_dir=spill_dir, device=device, on_batch=on_batch, workspace=workspace,
                          backend=backend)
    return rdms if isinstance(rdms, np.ndarray) else rdms.cpu().numpy()


def rdms_on_device(source: FeatureSource, task: str, *, images: int | None = None, center: str = "images",
                   pool: int | None = None, max_memory: int | None = None,
                   spill_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                   on_batch: Callable[[int], None] | None = None, workspace: Workspace | None = None,
                   backend: str | None = None) -> np.ndarray | torch.Tensor:
    """:func:`compute_rdms`, the RDMs left where they were computed: a numpy array with the
    numpy backend, a float64 tensor on ``device`` with torch."""
    check_center(center)
    if task not in source.tasks:
        raise unknown_choice("task", task, source.tasks)
    dev = resolve_device(device)
    backend = resolve_backend(backend, dev)
    with thread_limit(free_cores()):
        return _rdms(source, task, images, center, pool, max_memory, spill_dir, dev, on_batch, workspace, backend)


def _rdms(source: FeatureSource, task: str, images: int | None, center: str, pool: int | None,
          max_memory: int | None, spill_dir: str | os.PathLike | None, dev: torch.device,
          on_batch: Callable[[int], None] | None, workspace: Workspace | None,
          backend: str) -> np.ndarray | torch.Tensor:
    k = num_images(source, images)
    budget = int(max_memory) if max_memory else default_max_memory(dev)
    if budget <= 0:
        raise BadInput(f"max_memory must be a positive number of bytes, got {max_memory}")
    locations = list(source.locations)
    spill_root = Path(spill_dir) if spill_dir is not None else Path(tempfile.gettempdir())
    out = (np.empty((len(locations), k, k), dtype=np.float64) if backend == "numpy"
           else torch.empty((len(locations), k, k), dtype=torch.float64, device=dev))

    # Probe one batch for the feature sizes, then plan the passes over the source.
    stream = iter(source.batches(task, list(range(len(locations)))))
    first = next(stream, None)
    if first is None:
        raise BadInput(f"the features of task '{task}' are empty (no images)")
    _check_entries(first, len(locations), task)
    take = min(_batch_size(first), k)
    first_rows = [flatten_entry(e, pool, dev, take) for e in first]
    sizes = [k * rows.shape[1] * 4 for rows in first_rows]
    passes, spilled = plan_passes(sizes, budget)
    ctx = dict(task=task, source=source, k=k, center=center, pool=pool, device=dev, budget=budget,
               spill_root=spill_root, on_batch=on_batch, backend=backend,
               workspace=workspace if workspace is not None else Workspace())
    if passes[0] == list(range(len(locations))):
        _run_pass(passes[0], spilled, out, first_rows=first_rows, stream=stream, **ctx)
    else:
        _close(stream)
        del first_rows, first
        for locs in passes:
            _run_pass(locs, spilled, out, first_rows=None, stream=None, **ctx)
    return out


def _batch_size(batch: list[Any]) -> int:
    entry = batch[0]
    while isinstance(entry, (list, tuple)):
        entry = entry[0]
    return int(entry.shape[0])


def _check_entries(batch: Any, expected: int, task: str) -> None:
    if not isinstance(batch, (list, tuple)) or len(batch) != expected:
        got = len(batch) if isinstance(batch, (list, tuple)) else type(batch).__name__
        raise BadInput(f"the feature source gave {got} entries per batch for task '{task}' "
                       f"but {expected} locations were asked for")


def _close(stream: Iterator[Any]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _run_pass(locs: list[int], spilled: set[int], out: np.ndarray | torch.Tensor, *, task: str,
              source: FeatureSource, k: int, center: str, pool: int | None, device: torch.device, budget: int,
              spill_root: Path, on_batch: Callable[[int], None] | None, workspace: Workspace, backend: str,
              first_rows: list[torch.Tensor] | None,
              stream: Iterator[Any] | None) -> None:
    """Stream the first K images of ``task`` at ``locs`` into blocks and write their RDMs into ``out``."""
    if stream is None:
        stream = iter(source.batches(task, locs))
    names = source.locations
    blocks: dict[int, _Block] = {}
    try:
        batches = chain([first_rows], stream) if first_rows is not None else stream
        filled = 0
        for number, batch in enumerate(batches):
            if number == 0 and first_rows is not None:
                rows = batch
            else:
                _check_entries(batch, len(locs), task)
                take = min(_batch_size(batch), k - filled)
                rows = [flatten_entry(entry, pool, device, take) for entry in batch]
            if len({r.shape[0] for r in rows}) != 1:
                raise BadInput(f"the feature source gave batches of different sizes across locations "
                               f"for task '{task}' (images {filled}...)")
            for d, x in zip(locs, rows):
                if d not in blocks:
                    spill = (SpillFile(spill_root, (k, x.shape[1]), f"{task}-{names[d]}")
                             if d in spilled else None)
                    blocks[d] = _Block(k, x.shape[1], center, device, task, names[d], spill, budget, workspace,
                                       backend)
                blocks[d].add(x)
            count = int(rows[0].shape[0])
            filled += count
            del rows, batch
            if on_batch is not None:
                on_batch(count)
            if filled >= k:
                break
        _close(stream)
        if filled < k:
            raise BadInput(f"the features of task '{task}' cover only {filled} images, {k} were asked for")
        for d in locs:
            out[d] = blocks.pop(d).rdm()
    finally:
        _close(stream)
        for block in blocks.values():
            block.release()

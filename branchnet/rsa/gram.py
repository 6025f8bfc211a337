"""Gram matrices ``Z Z^T`` of feature blocks: in memory, or tile by tile from a spill file.

The RDM of a block of K centred, normalised image vectors is ``1 - Z Z^T``
(:mod:`branchnet.rsa.rdm`), so this product is where the time goes. On the CPU it goes
through numpy, whose ``a @ a.T`` is a BLAS ``syrk`` (only one triangle is computed: half
the work of a general matrix product; measured 2x faster than ``torch.mm`` on the
development machine); on a GPU through ``torch.mm``. Products are float32 and the result
is returned as float64.

A block that does not fit in memory lives in a float32 spill file (rows of Z, C order) and
its Gram matrix is computed from row tiles: ``G[i, j] = Z_i Z_j^T`` for tiles j <= i, with
at most two tiles in memory at a time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from branchnet.rsa import device as on_device


def gram(z: torch.Tensor) -> np.ndarray:
    """``z @ z.T`` for a (K, F) float32 tensor on any device; (K, K) float64 numpy array."""
    if z.device.type == "cpu":
        a = z.numpy()
        return (a @ a.T).astype(np.float64)
    return on_device.gram(z).cpu().numpy()


def product(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``a @ b.T`` as float64 numpy (CPU: numpy/BLAS, GPU: torch, without TF32)."""
    if a.device.type == "cpu":
        return (a.numpy() @ b.numpy().T).astype(np.float64)
    return on_device.product(a, b).cpu().numpy()


def tile_rows(num_features: int, budget: int) -> int:
    """Rows per tile so that two float32 tiles of ``num_features`` columns fit in ``budget`` bytes."""
    return max(1, int(budget // (2 * 4 * max(1, num_features))))


def gram_from_file(path: str | os.PathLike, shape: tuple[int, int], rows_per_tile: int,
                   device: torch.device,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """Gram matrix of the (K, F) float32 rows stored in ``path``, tile by tile.

    Args:
        path: raw float32 file of K rows of F values (C order).
        shape: (K, F).
        rows_per_tile: rows of each tile; two tiles are in memory at once.
        device: where the products run.
        transform: optional in-place map applied to each tile (T, F) as it is read.

    Returns:
        (K, K) float64 ``T(Z) T(Z)^T``.
    """
    k, f = shape
    starts = list(range(0, k, rows_per_tile))
    out = np.empty((k, k), dtype=np.float64)

    def load(start: int) -> torch.Tensor:
        stop = min(start + rows_per_tile, k)
        # A short-lived mapping: the pages read are not kept mapped (nor counted as ours).
        mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(k, f))
        tile = torch.from_numpy(np.array(mapped[start:stop]))
        del mapped
        tile = tile.to(device)
        return transform(tile) if transform is not None else tile

    for i, si in enumerate(starts):
        zi = load(si)
        ei = si + zi.shape[0]
        out[si:ei, si:ei] = gram(zi)
        for sj in starts[:i]:
            zj = load(sj)
            ej = sj + zj.shape[0]
            block = product(zi, zj)
            out[si:ei, sj:ej] = block
            out[sj:ej, si:ei] = block.T
            del zj
        del zi
    return out


def read_rows(path: str | os.PathLike, shape: tuple[int, int], rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the (K, F) float32 spill file ``path``, as a (len(rows), F) array."""
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=shape)
    out = np.array(mapped[np.asarray(rows)])
    del mapped
    return out


def products_with_file(path: str | os.PathLike, shape: tuple[int, int], w: np.ndarray, rows_per_tile: int,
                       device: torch.device) -> np.ndarray:
    """``w @ Z.T`` (float64, (len(w), K)) for the (K, F) float32 rows Z of ``path``, tile by tile."""
    k, f = shape
    wt = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(device)
    out = np.empty((w.shape[0], k), dtype=np.float64)
    for start in range(0, k, rows_per_tile):
        stop = min(start + rows_per_tile, k)
        mapped = np.memmap(path, dtype=np.float32, mode="r", shape=shape)
        tile = torch.from_numpy(np.array(mapped[start:stop])).to(device)
        del mapped
        out[:, start:stop] = product(wt, tile)
    return out


class SpillFile:
    """A float32 (K, F) matrix written row block by row block to a file in ``directory``.

    Rows are appended with ordinary writes (they go to the page cache, not this process's
    memory) and read back as a float32 ``np.memmap`` tile by tile. :meth:`close` removes
    the file (use it as a context manager so errors remove it too).
    """

    def __init__(self, directory: str | os.PathLike, shape: tuple[int, int], label: str = "block"):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:60]
        fd, name = tempfile.mkstemp(prefix=f".branchnet-spill-{safe}-", suffix=".f32", dir=directory)
        self.path = Path(name)
        self.shape = shape
        self._fh = os.fdopen(fd, "wb")
        self.rows = 0

    def append(self, rows: np.ndarray) -> None:
        """Append (B, F) rows (converted to float32)."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        self._fh.write(memoryview(rows.reshape(-1)).cast("B"))
        self.rows += rows.shape[0]

    def finish(self) -> None:
        """Flush the rows written so far; the file can then be read."""
        self._fh.flush()
        self._fh.close()

    def close(self) -> None:
        """Remove the file."""
        if not self._fh.closed:
            self._fh.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "SpillFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

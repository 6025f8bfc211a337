"""RSA with torch on the features' device: the GPU path (docs/performance.md, "RSA on the device").

The same computation as the CPU path (numpy; :mod:`branchnet.rsa.rdm`,
:mod:`branchnet.rsa.affinity`), written with torch so that the features never leave the
GPU: the Gram products run in float32 (TF32 switched off for them: 10-bit mantissas would
cost the RDMs their digits), the RDMs are formed in float64 with the same float64 fix-up
of weak rows, and each RDM triangle is ranked on the device (one batched sort, ties given
their average rank through running maxima/minima of the tie groups' bounds). Only the
(D, N, N) affinity comes back to the host, plus one flag read per block and location for
the error checks. With ``device="cpu"`` the same code runs on CPU tensors, which is how the
tests compare it with the numpy path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from branchnet.errors import BadInput

#: A row whose spread is below this fraction of its mean is centred in float64 (as on the CPU).
WEAK_ROW = 1e-2
#: Rank at most this many triangle entries in one batched sort (bounds the device memory).
RANK_BATCH = 2 ** 26


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """float32 matrix products in full float32 on CUDA (no TF32) for the block, restored afterwards."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9: the one API not to mix with the legacy flag
        previous = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = previous
    else:  # pragma: no cover - older torch
        previous = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = previous


def gram(z: torch.Tensor) -> torch.Tensor:
    """``z @ z.T`` of a (K, F) float32 tensor, as a (K, K) float64 tensor on its device."""
    with exact_float32(z.device):
        return torch.mm(z, z.T).double()


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` (float32 product) as float64 on the tensors' device."""
    with exact_float32(a.device):
        return torch.mm(a, b.T).double()


def check_row_means(row_mean: torch.Tensor, where: Callable[[int], str]) -> None:
    """BadInput naming the first image whose mean over features is not finite (one read)."""
    bad = ~torch.isfinite(row_mean)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise BadInput(f"features of {where(first)} hold NaN or Inf (or values too large for float32 sums, "
                       "|x| above ~1e18); check the model or the features file")


def fix_weak_rows(g: torch.Tensor, z: torch.Tensor, row_mean: torch.Tensor, where: Callable[[int], str]) -> torch.Tensor:
    """The CPU path's fix-up (:meth:`branchnet.rsa.rdm._Block._fix_weak_rows`) on the device.

    Rows whose norm after float32 centring is at most :data:`WEAK_ROW` * sqrt(F) * |mean|
    are re-centred in float64, their row and column of ``g`` recomputed (products in
    float32, the block against the fixed rows; their own block in float64). A row that
    re-centres to zero was constant: BadInput.
    """
    f = z.shape[1]
    norm = torch.sqrt(torch.clamp(torch.diagonal(g), min=0.0))
    weak = ~torch.isfinite(norm) | (norm <= WEAK_ROW * math.sqrt(f) * row_mean.abs())
    idx = torch.nonzero(weak).flatten()
    if idx.numel() == 0:
        return g
    rows = z[idx].double()
    rows -= rows.mean(dim=1, keepdim=True)
    constant = ~rows.any(dim=1)
    if bool(constant.any()):
        first = int(idx[torch.nonzero(constant)[0, 0]])
        raise BadInput(f"features of {where(first)} are constant, so Pearson correlation "
                       "is undefined; drop that image or choose another location")
    fixed = rows.float()
    cross = product(fixed, z)  # (w, K)
    g[idx, :] = cross
    g[:, idx] = cross.T
    exact = fixed.double()
    g[idx.unsqueeze(1), idx.unsqueeze(0)] = exact @ exact.T
    return g


def rdm_from_gram(g: torch.Tensor, center: str, where: Callable[[int], str], task: str, location: str) -> torch.Tensor:
    """``1 - G_ab / sqrt(G_aa G_bb)``, symmetric, clipped to [0, 2], zero diagonal: (K, K) float64."""
    if not bool(torch.isfinite(g).all()):
        raise BadInput(f"features of task '{task}' at location '{location}' are too large for "
                       "float32 products (|x| above ~1e18); rescale them")
    diag = torch.diagonal(g).clone()
    if center == "features":
        scale = float(diag.max()) if diag.numel() else 0.0
        flat = (diag <= 1e-10 * scale) if scale > 0 else torch.ones_like(diag, dtype=torch.bool)
        if bool(flat.any()):
            first = int(torch.nonzero(flat)[0, 0])
            raise BadInput(f"features of {where(first)} equal the mean image up to a constant, "
                           "so Pearson correlation after --center features is undefined; "
                           "use --center images or other images")
    inv = 1.0 / torch.sqrt(diag)
    rdm = 1.0 - g * torch.outer(inv, inv)
    rdm = 0.5 * (rdm + rdm.T)
    rdm.clamp_(0.0, 2.0)
    rdm.fill_diagonal_(0.0)
    return rdm


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..M along the last axis of ``values`` (R, M), ties given their average rank.

    Equal to ``scipy.stats.rankdata(row, method="average")`` for every row: after one
    sort, each entry's tie group spans sorted positions [s, e] (s from a running maximum of
    group starts, e from a reversed running minimum of group ends), its rank (s + e) / 2 + 1.
    """
    r, m = values.shape
    ordered, order = torch.sort(values, dim=1)
    positions = torch.arange(m, device=values.device).expand(r, m)
    starts = torch.ones((r, m), dtype=torch.bool, device=values.device)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.cummax(torch.where(starts, positions, torch.zeros_like(positions)), dim=1).values
    last = torch.where(ends, positions, torch.full_like(positions, m)).flip(1)
    last = torch.cummin(last, dim=1).values.flip(1)
    ranks = (first + last).double() / 2.0 + 1.0
    return torch.empty_like(ranks).scatter_(1, order, ranks)


def _pearson_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, N) Pearson correlation of the rows of ``rows`` (N, M) float64, and the rows without spread."""
    centred = rows - rows.mean(dim=1, keepdim=True)
    cov = centred @ centred.T
    var = torch.diagonal(cov).clone()
    scale = rows.abs().max(dim=1).values ** 2 * rows.shape[1]
    flat = var <= 1e-12 * torch.clamp(scale, min=1e-300)
    inv = 1.0 / torch.sqrt(var)
    corr = cov * inv[:, None] * inv[None, :]
    corr = 0.5 * (corr + corr.T)
    corr.clamp_(-1.0, 1.0)
    corr.fill_diagonal_(1.0)
    return corr, flat


def rdm_affinity(rdms: torch.Tensor, tasks: Sequence[str], locations: Sequence[str]) -> np.ndarray:
    """:func:`branchnet.rsa.affinity.rdm_affinity` of (N, D, K, K) RDMs held as a torch tensor.

    Returns (D, N, N) float64 numpy; BadInput for an RDM whose upper triangle is constant.
    """
    n, d, k, _ = rdms.shape
    if not bool(torch.isfinite(rdms).all()):
        raise BadInput("RDMs hold NaN or Inf; recompute them")
    iu = torch.triu_indices(k, k, 1, device=rdms.device)
    m = iu.shape[1]
    out, flats = [], []
    for loc in range(d):
        triangles = rdms[:, loc, iu[0], iu[1]]  # (N, M)
        step = max(1, RANK_BATCH // max(1, m))
        ranks = torch.cat([average_ranks(triangles[i:i + step]) for i in range(0, n, step)])
        corr, flat = _pearson_rows(ranks)
        out.append(corr)
        flats.append(flat)
    flat = torch.stack(flats)  # (D, N)
    if bool(flat.any()):
        loc, t = (int(v) for v in torch.nonzero(flat)[0])
        raise BadInput(f"the RDM of task '{tasks[t]}' at location '{locations[loc]}' is constant (every pair "
                       "of images equally dissimilar), so Spearman correlation is undefined; "
                       "use other images or another location")
    return torch.stack(out).cpu().numpy()

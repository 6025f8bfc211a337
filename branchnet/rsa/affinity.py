"""Task affinity from RDMs: Spearman between tasks' RDMs at every location, and its bootstrap.

Definition (docs/design.md; Vandenhende et al., Sec. 3.1, Alg. 1 line 6):
``A[d, i, j] = spearman(triu(RDM_i[d], k=1), triu(RDM_j[d], k=1))`` over the strict upper
triangle (the zero diagonal and the mirrored lower half would make every pair look alike),
with average ranks for ties. Each RDM's triangle is ranked once and the affinity is the
Pearson correlation of ranks, so a location costs N rankings, not N^2.

Bootstrap (``--bootstrap B``): images are resampled with replacement B times. Two copies
of the same image form a pair whose RDM entry is 0 by construction, not a measurement,
so such pairs are left out. Every other pair of resampled positions is a copy of an
original pair {a, b}, a != b, which occurs ``c_a * c_b`` times (c = how often each image
was drawn). Spearman over the resampled triangle is therefore a weighted Spearman over the
original triangle: average ranks of a multiset computed from one sort per RDM, then a
weighted Pearson. This is exact (tests compare it with expanding the resampled RDMs) and
costs O(K^2) per resample instead of a sort of the expanded triangle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from branchnet.affinity.file import AffinityData, affinity_data
from branchnet.affinity.measure import Measure
from branchnet.devices import resolve_device
from branchnet.errors import BadInput
from branchnet.machine import free_cores, thread_limit
from branchnet.rsa import device as on_device
from branchnet.rsa.rdm import (MIN_IMAGES, Workspace, check_center, default_max_memory, num_images,
                               parallel_rows, rdms_on_device, resolve_backend)
from branchnet.rsa.sources import FeatureSource

#: Central interval reported with the bootstrap (percent).
INTERVAL = 95.0


def _names(names: Sequence[str] | None, count: int, kind: str) -> list[str]:
    return list(names) if names is not None else [f"{kind} {i}" for i in range(count)]


def _check_rdms(rdms: np.ndarray) -> np.ndarray:
    rdms = np.asarray(rdms, dtype=np.float64)
    if rdms.ndim != 4 or rdms.shape[2] != rdms.shape[3]:
        raise BadInput(f"RDMs must have shape (N, D, K, K), got {rdms.shape}")
    if rdms.shape[2] < MIN_IMAGES:
        raise BadInput(f"RDMs need at least K={MIN_IMAGES} images, got K={rdms.shape[2]}")
    if not np.all(np.isfinite(rdms)):
        raise BadInput("RDMs hold NaN or Inf; recompute them")
    return rdms


def rdm_affinity(rdms: np.ndarray | torch.Tensor, tasks: Sequence[str] | None = None,
                 locations: Sequence[str] | None = None) -> np.ndarray:
    """Spearman between tasks' RDMs over the strict upper triangle, at every location.

    Args:
        rdms: (N, D, K, K) RDMs (only the strict upper triangles are read): a numpy array,
            or a torch tensor, ranked where it lives (:func:`branchnet.rsa.device.rdm_affinity`).
        tasks, locations: names used in error messages.

    Returns:
        (D, N, N) float64, symmetric, exactly 1 on the diagonal.

    Raises:
        BadInput: an RDM whose upper triangle is constant (Spearman undefined).
    """
    if isinstance(rdms, torch.Tensor):
        if rdms.ndim != 4 or rdms.shape[2] != rdms.shape[3] or rdms.shape[2] < MIN_IMAGES:
            raise BadInput(f"RDMs must have shape (N, D, K, K) with K >= {MIN_IMAGES}, got {tuple(rdms.shape)}")
        n, d = rdms.shape[:2]
        return on_device.rdm_affinity(rdms.double(), _names(tasks, n, "task"), _names(locations, d, "location"))
    rdms = _check_rdms(rdms)
    n, d, k, _ = rdms.shape
    tasks, locations = _names(tasks, n, "task"), _names(locations, d, "location")
    iu = np.triu_indices(k, 1)
    out = np.empty((d, n, n), dtype=np.float64)
    ranks = np.empty((d, n, iu[0].size))

    def rank(lo: int, hi: int) -> None:  # numpy sorts without the GIL: one RDM per thread
        for index in range(lo, hi):
            loc, t = divmod(index, n)
            ranks[loc, t] = average_ranks(rdms[t, loc][iu])

    parallel_rows(rank, d * n)
    for loc in range(d):
        out[loc] = _pearson_rows(ranks[loc], None, tasks, locations[loc])
    return out


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..M of ``values`` (M,), ties given their average rank.

    The same as ``scipy.stats.rankdata(values, method="average")`` (the tests check it),
    about twice as fast here: an unstable sort suffices because tied values share a rank.
    """
    order = np.argsort(values)
    ordered = values[order]
    new_group = np.empty(ordered.size, dtype=bool)
    new_group[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], ordered.size)
    group_rank = (starts + ends + 1) / 2.0  # average of the ranks starts+1 .. ends
    out = np.empty(values.size, dtype=np.float64)
    out[order] = np.repeat(group_rank, ends - starts)
    return out


def _pearson_rows(rows: np.ndarray, weights: np.ndarray | None, tasks: list[str], location: str,
                  strict: bool = True) -> np.ndarray:
    """(N, N) (weighted) Pearson correlation between the rows of ``rows`` (N, M).

    A row without spread gives NaN, or BadInput when ``strict``.
    """
    if weights is None:
        centred = rows - rows.mean(axis=1, keepdims=True)
        weighted = centred
    else:
        mean = rows @ weights / weights.sum()
        centred = rows - mean[:, None]
        weighted = centred * weights
    cov = weighted @ centred.T
    var = np.diagonal(cov).copy()
    scale = np.abs(rows).max(axis=1) ** 2 * (weights.sum() if weights is not None else rows.shape[1])
    flat = var <= 1e-12 * np.maximum(scale, 1e-300)
    if flat.any():
        if strict:
            t = int(np.flatnonzero(flat)[0])
            raise BadInput(f"the RDM of task '{tasks[t]}' at location '{location}' is constant (every pair "
                           "of images equally dissimilar), so Spearman correlation is undefined; "
                           "use other images or another location")
        var = np.where(flat, np.nan, var)
    inv = 1.0 / np.sqrt(var)
    corr = cov * inv[:, None] * inv[None, :]
    corr = 0.5 * (corr + corr.T)
    np.clip(corr, -1.0, 1.0, out=corr)
    np.fill_diagonal(corr, np.where(flat, np.nan, 1.0))
    return corr


class _RankPlan:
    """One sort of an RDM triangle, reused to rank any multiset of its entries (weights).

    For values v (M,) sorted ascending, the tie groups are runs of equal values. With
    weights w (how often each entry occurs), the group g of total weight W_g that follows
    S_g occurrences has average rank S_g + (W_g + 1) / 2.
    """

    def __init__(self, values: np.ndarray):
        self.order = np.argsort(values, kind="stable")
        ordered = values[self.order]
        new_group = np.empty(ordered.size, dtype=bool)
        new_group[:1] = True
        new_group[1:] = ordered[1:] != ordered[:-1]
        self.starts = np.flatnonzero(new_group)
        self.group = np.cumsum(new_group) - 1

    def ranks(self, weights: np.ndarray) -> np.ndarray:
        """Average ranks (M,) of the entries in the multiset where entry m occurs ``weights[m]`` times."""
        group_weight = np.add.reduceat(weights[self.order], self.starts)
        before = np.cumsum(group_weight) - group_weight
        group_rank = before + (group_weight + 1.0) / 2.0
        out = np.empty(weights.size, dtype=np.float64)
        out[self.order] = group_rank[self.group]
        return out


def _rank_plans(rdms: np.ndarray) -> list[list[_RankPlan]]:
    n, d, k, _ = rdms.shape
    iu = np.triu_indices(k, 1)
    return [[_RankPlan(rdms[t, loc][iu]) for t in range(n)] for loc in range(d)]


def _pair_weights(sample: np.ndarray, k: int, iu: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    counts = np.bincount(np.asarray(sample), minlength=k).astype(np.float64)
    return counts[iu[0]] * counts[iu[1]]


def resampled_affinity(rdms: np.ndarray, sample: Sequence[int], tasks: Sequence[str] | None = None,
                       locations: Sequence[str] | None = None, *, _plans: Any = None) -> np.ndarray:
    """The affinity of one resample of the images, pairs of identical images left out.

    Equal to taking ``R = rdms[..., sample, :][..., :, sample]``, keeping the strict upper
    triangle pairs (p, q) with ``sample[p] != sample[q]`` and computing Spearman between
    tasks over them.

    Args:
        rdms: (N, D, K, K) RDMs.
        sample: K' image indices in [0, K) (drawn with replacement).

    Returns:
        (D, N, N) float64; NaN where a task's resampled RDM is constant (e.g. fewer than
        three distinct images drawn).
    """
    rdms = _check_rdms(rdms)
    n, d, k, _ = rdms.shape
    sample = np.asarray(sample)
    if sample.ndim != 1 or sample.size == 0 or sample.min() < 0 or sample.max() >= k:
        raise BadInput(f"a resample must be a 1-D array of image indices in [0, {k})")
    tasks, locations = _names(tasks, n, "task"), _names(locations, d, "location")
    plans = _plans if _plans is not None else _rank_plans(rdms)
    iu = np.triu_indices(k, 1)
    weights = _pair_weights(sample, k, iu)
    out = np.full((d, n, n), np.nan)
    if weights.sum() <= 0:
        return out
    for loc in range(d):
        ranks = np.stack([plans[loc][t].ranks(weights) for t in range(n)])
        out[loc] = _pearson_rows(ranks, weights, tasks, locations[loc], strict=False)
    return out


def bootstrap_affinity(rdms: np.ndarray, B: int, seed: int = 0, tasks: Sequence[str] | None = None,
                       locations: Sequence[str] | None = None,
                       on_step: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bootstrap the affinity over images: B resamples with replacement.

    Resample b draws K image indices ``np.random.default_rng(seed).integers(0, K, (B, K))[b]``
    and its affinity is :func:`resampled_affinity` (pairs of identical images left out).
    Resamples where a task's RDM is constant are skipped for that entry.

    Args:
        rdms: (N, D, K, K) RDMs.
        B: number of resamples, at least 2.
        seed: seed of the resampling.
        on_step: called after each resample (progress).

    Returns:
        (std, low, high), each (D, N, N): the standard deviation over resamples (ddof=1)
        and the bounds of the central 95% percentile interval.
    """
    rdms = _check_rdms(rdms)
    if int(B) < 2:
        raise BadInput(f"--bootstrap needs at least 2 resamples, got {B}")
    n, d, k, _ = rdms.shape
    samples = np.random.default_rng(seed).integers(0, k, size=(int(B), k))
    plans = _rank_plans(rdms)
    values = np.empty((int(B), d, n, n))
    for b, sample in enumerate(samples):
        values[b] = resampled_affinity(rdms, sample, tasks, locations, _plans=plans)
        if on_step is not None:
            on_step()
    valid = np.isfinite(values).sum(axis=0)
    if valid.min() < 2:
        raise BadInput(f"the bootstrap found fewer than 2 usable resamples among {B} (K={k} images is too "
                       "few, or an RDM is nearly constant); use more images or more resamples")
    std = np.nanstd(values, axis=0, ddof=1)
    tail = (100.0 - INTERVAL) / 2.0
    low, high = np.nanpercentile(values, [tail, 100.0 - tail], axis=0)
    for arr, diag in ((std, 0.0), (low, 1.0), (high, 1.0)):
        for loc in range(d):
            np.fill_diagonal(arr[loc], diag)
    return std, low, high


# ---------------------------------------------------------------------------------------------
# From a feature source to affinity
# ---------------------------------------------------------------------------------------------

@dataclass
class AffinityResult:
    """What :func:`compute_affinity` measured.

    Attributes:
        affinity: (D, N, N) Spearman affinities.
        tasks, locations: N task and D location names.
        num_images: K, the images the RDMs were computed from.
        rdms: (N, D, K, K) float32 RDMs when kept, else None.
        affinity_std, affinity_low, affinity_high: (D, N, N) bootstrap standard deviation and
            95% interval bounds, or None without bootstrap.
        settings: the settings used (JSON-safe).
    """

    affinity: np.ndarray
    tasks: list[str]
    locations: list[str]
    num_images: int
    rdms: np.ndarray | None = None
    affinity_std: np.ndarray | None = None
    affinity_low: np.ndarray | None = None
    affinity_high: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def compute_affinity(source: FeatureSource, images: int | None = None, center: str = "images",
                     pool: int | None = None, bootstrap: int = 0, seed: int = 0,
                     max_memory: int | None = None, spill_dir: str | os.PathLike | None = None,
                     device: str = "cpu", keep_rdms: bool = False, progress: bool = True,
                     backend: str | None = None) -> AffinityResult:
    """RDMs of every task at every location of ``source``, then their affinity (and bootstrap).

    The source is streamed task by task (:func:`~branchnet.rsa.rdm.compute_rdms`); the RDMs
    of all tasks (N * D * K^2 float64 values: 40 MB for N=5, D=4, K=500) are kept for the
    comparison, on the device with the torch backend (the default on a GPU: the ranking
    runs there too and only the affinity comes back). Arguments are those of
    :func:`~branchnet.rsa.rdm.compute_rdms` plus ``bootstrap`` (B resamples, 0 for none;
    see :func:`bootstrap_affinity`; on the host), ``seed``, ``keep_rdms`` (return the RDMs
    as float32) and ``progress`` (a rich progress bar on stderr over tasks and batches).
    On the CPU every thread pool is sized to the cores free when it starts
    (:func:`branchnet.machine.free_cores`; recorded as ``settings["threads"]``).
    """
    check_center(center)
    dev = resolve_device(device)
    backend = resolve_backend(backend, dev)
    threads = free_cores()
    with thread_limit(threads):
        result = _compute_affinity(source, images, center, pool, bootstrap, seed, max_memory, spill_dir, dev,
                                   keep_rdms, progress, backend)
    result.settings["threads"] = threads
    return result


def _compute_affinity(source: FeatureSource, images: int | None, center: str, pool: int | None, bootstrap: int,
                      seed: int, max_memory: int | None, spill_dir: str | os.PathLike | None, dev: Any,
                      keep_rdms: bool, progress: bool, backend: str) -> AffinityResult:
    from branchnet.progress import progress_bar

    k = num_images(source, images)
    bootstrap = int(bootstrap)
    if bootstrap < 0 or bootstrap == 1:
        raise BadInput(f"--bootstrap must be 0 (none) or at least 2 resamples, got {bootstrap}")
    budget = int(max_memory) if max_memory else default_max_memory(dev)
    tasks, locations = list(source.tasks), list(source.locations)
    shape = (len(tasks), len(locations), k, k)
    rdms = (np.empty(shape, dtype=np.float64) if backend == "numpy"
            else torch.empty(shape, dtype=torch.float64, device=dev))
    workspace = Workspace()  # block memory reused from task to task
    with progress_bar(quiet=not progress) as bar:
        overall = bar.add_task("affinity: tasks", total=len(tasks))
        for t, task in enumerate(tasks):
            images_bar = bar.add_task(f"  {task}: images", total=None)
            rdms[t] = rdms_on_device(source, task, images=k, center=center, pool=pool, max_memory=budget,
                                     spill_dir=spill_dir, device=dev, workspace=workspace, backend=backend,
                                     on_batch=lambda count, tid=images_bar: bar.advance(tid, count))
            bar.remove_task(images_bar)
            bar.advance(overall)
        workspace.clear()
        affinity = rdm_affinity(rdms, tasks, locations)
        if isinstance(rdms, torch.Tensor) and (bootstrap or keep_rdms):
            rdms = rdms.cpu().numpy()
        std = low = high = None
        if bootstrap:
            boot = bar.add_task("affinity: bootstrap", total=bootstrap)
            std, low, high = bootstrap_affinity(rdms, bootstrap, seed, tasks, locations,
                                                on_step=lambda: bar.advance(boot))
    settings = {"images": k, "center": center, "pool": f"avg:{pool}" if pool else "none",
                "bootstrap": bootstrap, "seed": seed if bootstrap else None, "max_memory": budget,
                "device": str(dev), "backend": backend, "interval": INTERVAL if bootstrap else None}
    return AffinityResult(affinity=affinity, tasks=tasks, locations=locations, num_images=k,
                          rdms=rdms.astype(np.float32) if keep_rdms else None,
                          affinity_std=std, affinity_low=low, affinity_high=high, settings=settings)


def affinity_to_data(result: AffinityResult, tasks: Sequence[str] | None = None,
                     locations: Sequence[str] | None = None, *, stage_params: Any = None,
                     head_params: Any = None, stage_flops: Any = None, head_flops: Any = None,
                     backbone: str | None = None, input_size: tuple[int, int] | None = None) -> AffinityData:
    """An :class:`~branchnet.affinity.AffinityData` for ``save_affinity`` from a result and costs.

    ``tasks``/``locations`` override the names in ``result`` (same lengths). The bootstrap
    interval goes to ``extra`` as ``affinity_low`` / ``affinity_high`` (D, N, N).
    """
    extra = {}
    if result.affinity_low is not None:
        extra["affinity_low"] = np.asarray(result.affinity_low, dtype=np.float64)
        extra["affinity_high"] = np.asarray(result.affinity_high, dtype=np.float64)
    return affinity_data(
        result.affinity, tasks if tasks is not None else result.tasks,
        locations if locations is not None else result.locations, "rsa",
        stage_params=stage_params, head_params=head_params, stage_flops=stage_flops, head_flops=head_flops,
        backbone=backbone, input_size=input_size, rdms=result.rdms, affinity_std=result.affinity_std, extra=extra,
    ).validate("affinity")


def rsa_from_rdms(rdms: np.ndarray, tasks: Sequence[str], locations: Sequence[str]) -> AffinityData:
    """The RSA affinity file of RDMs (N, D, K, K), without costs (:func:`rdm_affinity`)."""
    return affinity_data(rdm_affinity(rdms, tasks, locations), tasks, locations, "rsa").validate("affinity")


#: RSA (the paper's measure): Spearman between the tasks' RDMs at every location.
RSA = Measure("rsa", "RDMs (N, D, K, K) of each task's features at every location",
              lambda n, d, k: (n, d, k, k), rsa_from_rdms)

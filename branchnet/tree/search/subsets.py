"""Tables over all 2^N task subsets (bitmasks) for the exact search.

For one stage with distances ``dist`` (N, N):

* ``diameters(dist)[S]``: the largest distance inside subset S (0 for |S| <= 1);
  :func:`subset_costs` gives the group term of any cost form of
  :mod:`branchnet.tree.group_cost` the same way (``max``: the diameters);
* ``partition_table(diam)[S, a]``: the least sum of diameters over partitions of S into
  exactly ``a`` groups (inf when impossible), by the subset recursion
  ``F[S, a] = min_{T ⊆ S, T ∋ low(S)} diam[T] + F[S \\ T, a - 1]``;
* ``together_table(diam, F)[S, a]``: the same over partitions of *all* tasks into ``a``
  groups in which S lies inside one group (a superset-minimum transform).

They give lower bounds and sub-solutions of the nested-partition search. Time
O(3^N N) and memory O(2^N N) per stage: fine up to N ~ 14.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def popcount(masks: np.ndarray) -> np.ndarray:
    """Number of set bits of each non-negative int64 in ``masks``."""
    masks = np.asarray(masks, dtype=np.int64)
    count = np.zeros(masks.shape, dtype=np.int64)
    m = masks.copy()
    while np.any(m):
        count += m & 1
        m >>= 1
    return count


@lru_cache(maxsize=8)
def _bit_matrix(n: int) -> np.ndarray:
    """(2^n, n) bool: bit i of every mask."""
    masks = np.arange(1 << n, dtype=np.int64)
    return ((masks[:, None] >> np.arange(n)) & 1).astype(bool)


def submasks_with_low(mask: int) -> np.ndarray:
    """Every submask T of ``mask`` that holds mask's lowest set bit (int64 array).

    Listing a partition by the group that holds its lowest element counts every
    partition once.
    """
    low = mask & -mask
    rest = mask ^ low
    bits = [1 << i for i in range(rest.bit_length()) if rest >> i & 1]
    if not bits:
        return np.array([low], dtype=np.int64)
    choose = _bit_matrix(len(bits))
    return low + choose.astype(np.int64) @ np.array(bits, dtype=np.int64)


def diameters(dist: np.ndarray) -> np.ndarray:
    """(2^N,) largest pairwise distance inside each subset (0 for empty and singletons)."""
    n = dist.shape[0]
    diam = np.zeros(1 << n)
    for hb in range(1, n):
        low = np.arange(1 << hb, dtype=np.int64)
        # distance of task hb to the farthest task of each subset of 0..hb-1
        far = np.where(_bit_matrix(hb), dist[hb, :hb][None, :], 0.0).max(axis=1)
        diam[(1 << hb) + low] = np.maximum(diam[low], far)
    return diam


def pair_sums(dist: np.ndarray) -> np.ndarray:
    """(2^N,) sum of the pairwise distances inside each subset (0 for empty and singletons)."""
    n = dist.shape[0]
    total = np.zeros(1 << n)
    for hb in range(1, n):
        low = np.arange(1 << hb, dtype=np.int64)
        # distances of task hb to the tasks of each subset of 0..hb-1
        reach = _bit_matrix(hb).astype(np.float64) @ dist[hb, :hb]
        total[(1 << hb) + low] = total[low] + reach
    return total


def subset_costs(dist: np.ndarray, form: str = "max") -> np.ndarray:
    """(2^N,) the group term ``c(S)`` of every subset S under a cost form
    (:data:`branchnet.tree.group_cost.FORMS`): ``max`` the diameter, ``mean`` the mean pair
    distance, ``weighted`` ``|S|`` times the diameter, ``pairsum`` the sum of the pair costs
    (the learned cost; may be negative); 0 for empty sets and singletons."""
    if form == "max":
        return diameters(dist)
    n = dist.shape[0]
    size = popcount(np.arange(1 << n, dtype=np.int64))
    if form == "mean":
        pairs = size * (size - 1) / 2
        return np.where(size > 1, pair_sums(dist) / np.maximum(pairs, 1), 0.0)
    if form == "weighted":
        return size * diameters(dist)
    if form == "pairsum":
        return pair_sums(dist)
    from branchnet.errors import unknown_choice
    from branchnet.tree.group_cost import FORMS

    raise unknown_choice("cost form", form, FORMS)


def partition_table(diam: np.ndarray, n: int) -> np.ndarray:
    """(2^N, N+1) least sum of diameters over partitions of S into a groups (inf if none)."""
    table = np.full((1 << n, n + 1), np.inf)
    table[0, 0] = 0.0
    for s in range(1, 1 << n):
        t = submasks_with_low(s)
        table[s, 1:] = (diam[t][:, None] + table[s ^ t][:, :-1]).min(axis=0)
    return table


def together_table(diam: np.ndarray, table: np.ndarray, n: int) -> np.ndarray:
    """(2^N, N+1) least sum of diameters over partitions of all tasks into a groups with S in one group."""
    full = (1 << n) - 1
    masks = np.arange(1 << n, dtype=np.int64)
    out = np.full((1 << n, n + 1), np.inf)
    out[:, 1:] = diam[:, None] + table[full ^ masks][:, :-1]  # S is exactly one group ...
    out[0] = np.inf
    for b in range(n):  # ... or lies inside a larger one: minimum over supersets
        bit = 1 << b
        lower = masks[(masks & bit) == 0]
        out[lower] = np.minimum(out[lower], out[lower | bit])
    return out


def best_partition(diam: np.ndarray, table: np.ndarray, mask: int, groups: int) -> list[int]:
    """A partition of ``mask`` into ``groups`` groups achieving ``table[mask, groups]`` (as masks).

    Deterministic: among equal choices, the first submask in :func:`submasks_with_low` order.
    """
    out = []
    while mask:
        t = submasks_with_low(mask)
        cost = diam[t] + table[mask ^ t, groups - 1]
        i = int(np.argmin(cost))
        out.append(int(t[i]))
        mask ^= int(t[i])
        groups -= 1
    return out


def minplus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Min-plus convolution ``c[i] = min_{j} a[j] + b[i - j]``, truncated to len(a)."""
    n = len(a)
    out = np.full(n, np.inf)
    for j in np.flatnonzero(np.isfinite(a)):
        out[j:] = np.minimum(out[j:], a[j] + b[: n - j])
    return out

"""Counting and unranking chains of nested set partitions: the trees of docs/design.md, "Tree".

A tree over N tasks and D stages is a chain ``P_0 ⊑ ... ⊑ P_{D-1}`` (each partition refines
the one above) with group counts ``k_0 <= ... <= k_{D-1}``. Read from the deepest stage up,
it is a set partition of the N tasks into ``k_{D-1}`` blocks, then a partition of those
``k_{D-1}`` blocks into ``k_{D-2}`` blocks, and so on, so the chains with counts k number ::

    C(k) = S(N, k_{D-1}) * prod_{d < D-1} S(k_{d+1}, k_d)

with ``S(n, k)`` the Stirling numbers of the second kind (Graham, Knuth & Patashnik,
"Concrete Mathematics", Section 6.1). Each factor is unranked with the recurrence
``S(n, k) = S(n-1, k-1) + k S(n-1, k)``: the last item is alone (the first ``S(n-1, k-1)``
ranks) or joins one of the k blocks of a partition of the others. So every chain has one
rank in ``[0, C(k))`` and :func:`unrank_chain` builds it from its rank: sampling a rank
uniformly samples a tree uniformly (:mod:`branchnet.tree.sampling`). Counts are Python
integers (exact at any N).
"""

from __future__ import annotations

from collections.abc import Sequence
import numpy as np


_STIRLING: list[list[int]] = [[1]]  # row m holds S(m, 0..m)


def stirling2(n: int, k: int) -> int:
    """``S(n, k)``: the number of partitions of n items into k non-empty blocks."""
    if n < 0 or k < 0 or k > n:
        return 0
    while len(_STIRLING) <= n:
        prev, m = _STIRLING[-1], len(_STIRLING)
        _STIRLING.append([0] + [prev[j - 1] + j * (prev[j] if j < m else 0) for j in range(1, m + 1)])
    return _STIRLING[n][k]


def count_chains(n: int, counts: Sequence[int]) -> int:
    """``C(k)``: the number of trees of n tasks with group counts ``counts`` (D,), non-decreasing."""
    counts = [int(c) for c in counts]
    if not counts or any(c < 1 or c > n for c in counts) or any(a > b for a, b in zip(counts, counts[1:])):
        return 0
    total = stirling2(n, counts[-1])
    for d in range(len(counts) - 1):
        total *= stirling2(counts[d + 1], counts[d])
    return total


def unrank_set_partition(n: int, k: int, rank: int) -> list[int]:
    """The partition of items 0..n-1 into k blocks of rank ``rank`` in ``[0, S(n, k))``.

    Returns block labels (n,), blocks numbered in the order of their first item.
    """
    if not 0 <= rank < stirling2(n, k):
        raise ValueError(f"rank {rank} outside [0, S({n}, {k}))")
    decisions: list[int] = []  # for items m-1 = n-1, n-2, ...: -1 alone, else the block joined
    m, blocks = n, k
    while m > blocks:
        alone = stirling2(m - 1, blocks - 1)
        if rank < alone:
            decisions.append(-1)
            blocks -= 1
        else:
            rank -= alone
            decisions.append(rank % blocks)
            rank //= blocks
        m -= 1
    labels = list(range(m))  # the first m items: one block each
    made = m
    for choice in reversed(decisions):
        if choice < 0:
            labels.append(made)
            made += 1
        else:
            labels.append(choice)
    return labels


def unrank_chain(n: int, counts: Sequence[int], rank: int) -> np.ndarray:
    """The tree with group counts ``counts`` (D,) of rank ``rank`` in ``[0, C(k))``, as (D, N) labels.

    The rank is a mixed-radix number: its lowest digit (base ``S(N, k_{D-1})``) is the deepest
    partition, the next (base ``S(k_{D-1}, k_{D-2})``) how its blocks merge one stage up, and so
    on. Labels at every stage number groups in the order of their first task.
    """
    counts = [int(c) for c in counts]
    total = count_chains(n, counts)
    if not 0 <= rank < total:
        raise ValueError(f"rank {rank} outside [0, {total}) for counts {counts}")
    depth = len(counts)
    labels = np.zeros((depth, n), dtype=np.int64)
    base = stirling2(n, counts[-1])
    labels[-1] = unrank_set_partition(n, counts[-1], rank % base)
    rank //= base
    for d in range(depth - 2, -1, -1):
        base = stirling2(counts[d + 1], counts[d])
        merge = np.asarray(unrank_set_partition(counts[d + 1], counts[d], rank % base), dtype=np.int64)
        rank //= base
        labels[d] = merge[labels[d + 1]]
    return labels

"""Scalable tree search for many tasks (e.g. CelebA's 40 attributes): linkage starts + local search.

No exact method is known to be practical at N = 40, so this search trades the proof of
optimality for speed:

1. Starting trees: the complete-linkage baseline (:func:`linkage.linkage_baseline`), the
   all-shared tree and, for the group-count vectors k that look most promising by the
   per-stage dendrogram cut costs (``sum_d cost_d(k_d) / k_d``), nested trees built
   top-down and bottom-up from the dendrograms (:mod:`branchnet.tree.search.linkage`).
2. The best few starts (always including the baseline) are improved by first-improvement
   local search (:mod:`branchnet.tree.search.local`), which only ever accepts better trees, so
   the result is never worse than the baseline.

Deterministic: no random numbers, fixed orders everywhere.
"""

from __future__ import annotations

import numpy as np

from branchnet.tree.search.linkage import Dendrograms, bottom_up, linkage_baseline, top_down
from branchnet.tree.search.local import iterated_local_search, local_search
from branchnet.tree.search.problem import Problem, better, canonical_labels, separate_labels, shared_labels


def scalable_search(problem: Problem, num_counts: int | None = None, num_starts: int | None = None,
                    rounds: int | None = None, patience: int = 8) -> np.ndarray:
    """A good tree within the budget as (D, N) labels (the all-shared tree must fit).

    ``num_counts``: how many promising count vectors to build starting trees for
    (default 240 / N within [12, 30]); ``num_starts``: how many of the best starts (besides
    the baseline) to improve (default 80 / N within [2, 10]); ``rounds``: kicks of the iterated
    local search on the best tree (default max(2, min(40, 4000 / N^2))). The cost of one descent
    grows about as N^2, so smaller problems get more starts and kicks and N = 40 stays within
    seconds; the kicks stop after ``patience`` in a row bring nothing.
    """
    n = problem.num_tasks
    num_counts = max(12, min(30, 240 // n)) if num_counts is None else num_counts
    num_starts = max(2, min(10, 80 // n)) if num_starts is None else num_starts
    starts = starting_trees(problem, num_counts)
    baseline = starts[0]
    ranked = sorted(range(1, len(starts)), key=lambda i: _sort_key(problem.key(starts[i])))
    # the baseline, the all-shared tree (its descent peels off the worst-fitting tasks
    # first) and the best-looking constructions
    chosen = [baseline, starts[1]] + [starts[i] for i in ranked[:num_starts]]
    best_key, best = None, None
    seen: set[bytes] = set()
    for labels in chosen:
        labels = canonical_labels(labels)
        if labels.tobytes() in seen:
            continue
        seen.add(labels.tobytes())
        improved = local_search(problem, labels)
        key = problem.key(improved)
        if better(key, best_key):
            best_key, best = key, improved
    assert best is not None
    if rounds is None:
        rounds = max(2, min(40, 4000 // n**2))
    return iterated_local_search(problem, best, rounds, patience=patience)


def _sort_key(key: tuple[float, ...]) -> tuple[float, ...]:
    return (round(key[0], 9),) + tuple(key[1:4])


def starting_trees(problem: Problem, num_counts: int = 12) -> list[np.ndarray]:
    """Budget-fitting starting trees; the first is the complete-linkage baseline."""
    depth, n = problem.depth, problem.num_tasks
    starts = [linkage_baseline(problem), shared_labels(depth, n)]
    separate = separate_labels(depth, n)
    if problem.fits(np.full(depth, n)):
        starts.append(separate)
    counts = problem.count_vectors()
    dendrograms = Dendrograms(problem)
    estimate = dendrograms.estimates(counts)
    params = problem.params_of(counts)
    order = np.lexsort((params, estimate))[:num_counts] if len(counts) else []
    for k in counts[order]:
        labels = top_down(dendrograms, k)
        if labels is not None:
            starts.append(labels)
        starts.append(bottom_up(problem, k))
    return [s for s in starts if problem.fits(np.array([len(np.unique(r)) for r in s]))]

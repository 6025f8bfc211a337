"""Synthetic candidate tables shaped like Standley et al.'s (for tests, benchmarks, examples).

Every group of tasks gets a full-width network of cost 1 (one "standard network time":
the paper measures cost in units of a full-size encoder, and its decoders are light),
and every task a half-width single-task network of cost 0.5 (Sec. 3.1: 31 + 5 = 36
candidates for 5 tasks). Losses follow the paper's observations (Sec. 6, Table 2): a
task trained with others is a few percent better or worse than alone, depending on
which tasks it is paired with, and sharing one encoder among many tasks costs some
capacity; half-width networks are a few percent worse.
"""

from __future__ import annotations

import itertools

import numpy as np

from branchnet.selection.candidates import Candidate, CandidateTable, group_name


def paper_like_table(n_tasks: int, seed: int = 0, half_width: bool = True,
                     max_size: int | None = None) -> CandidateTable:
    """A random candidate table: all groups of up to ``max_size`` tasks, plus half-width singles.

    ``L(G, t) = s_t * (1 + mean_{u in G, u != t} p[t, u] + 0.01 (|G| - 1) + e)`` with
    single-task losses ``s_t ~ U(0.05, 0.2)``, pair effects ``p ~ N(0, 0.05)`` and noise
    ``e ~ N(0, 0.02)``; half-width: ``s_t * (1 + U(0.02, 0.08))`` at cost 0.5.
    """
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n_tasks)]
    single = rng.uniform(0.05, 0.2, n_tasks)
    pair = rng.normal(0.0, 0.05, (n_tasks, n_tasks))
    candidates = []
    for size in range(1, (max_size or n_tasks) + 1):
        for group in itertools.combinations(range(n_tasks), size):
            losses = {}
            for t in group:
                effect = np.mean([pair[t, u] for u in group if u != t]) if size > 1 else 0.0
                losses[tasks[t]] = float(single[t] * (1 + effect + 0.01 * (size - 1) + rng.normal(0, 0.02)))
            candidates.append(Candidate(group_name([tasks[t] for t in group]), 1.0, losses))
    if half_width:
        for t in range(n_tasks):
            candidates.append(Candidate(group_name([tasks[t]], 0.5), 0.5,
                                        {tasks[t]: float(single[t] * (1 + rng.uniform(0.02, 0.08)))}))
    return CandidateTable(tuple(tasks), tuple(candidates))

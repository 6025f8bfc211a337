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


def many_networks_table(n_tasks: int, n_candidates: int, seed: int = 0,
                        widths: tuple[float, ...] = (1.0, 0.75, 0.5)) -> CandidateTable:
    """A large random candidate table: ``n_candidates`` networks over ``n_tasks`` tasks.

    Every task has a single-task network at full and at half width (so every task is
    covered); the other networks are drawn at random: a group uniform over the non-empty
    subsets of the tasks and a width from ``widths`` (cost = width, as the paper counts
    a network's encoder). Losses follow :func:`paper_like_table`, a thinner network being
    ``(1 - width) * U(4, 16) %`` worse. Repeated (group, width) draws are further trained
    copies (other seeds), named ``<group>@<width>#<k>``.
    """
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n_tasks)]
    single = rng.uniform(0.05, 0.2, n_tasks)
    pair = rng.normal(0.0, 0.05, (n_tasks, n_tasks))

    def losses_of(group: list[int], width: float) -> dict[str, float]:
        out = {}
        for t in group:
            effect = np.mean([pair[t, u] for u in group if u != t]) if len(group) > 1 else 0.0
            thin = (1.0 - width) * rng.uniform(0.04, 0.16)
            out[tasks[t]] = float(single[t] * (1 + effect + 0.01 * (len(group) - 1) + thin + rng.normal(0, 0.02)))
        return out

    candidates: list[Candidate] = []
    seen: dict[str, int] = {}
    for t in range(n_tasks):
        for width in (1.0, 0.5):
            name = group_name([tasks[t]], width)
            seen[name] = 1
            candidates.append(Candidate(name, width, losses_of([t], width)))
    while len(candidates) < n_candidates:
        mask = int(rng.integers(1, 1 << n_tasks))
        group = [t for t in range(n_tasks) if mask >> t & 1]
        width = float(widths[int(rng.integers(len(widths)))])
        name = group_name([tasks[t] for t in group], width)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        candidates.append(Candidate(name, width, losses_of(group, width)))
    return CandidateTable(tuple(tasks), tuple(candidates[:n_candidates]))

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


# -- generator families the exact search was not tuned on (tools/bench_select.py, tests) ----------------

#: The families of :func:`family_table`, each with what it stresses.
FAMILIES = {
    "grid": "the project's own generator (many_networks_table): costs 1, 0.75, 0.5 on a grid",
    "proportional": "cost proportional to the tasks served (0.2 per task, +-20 %), continuous",
    "independent": "cost independent of the tasks served, U(0.1, 1.5); uniform losses",
    "heavy-tailed": "Pareto costs (shape 1.2, from 0.05): most networks cheap, a few very dear",
    "huge-cheap": "a few networks serving 10 to all tasks at cost 0.2 to 0.4, the rest dearer",
    "decimals": "continuous costs with 3 decimals, U(0.1, 2), all off any coarse grid",
    "every-size": "a random subset of every size 1..T, costs independent U(0.25, 1.25), uniform losses",
}


def family_table(family: str, n_tasks: int, n_candidates: int, seed: int = 0) -> CandidateTable:
    """A random candidate table of ``n_candidates`` networks over ``n_tasks`` tasks from a named family.

    Families (:data:`FAMILIES`) differ in how a network's tasks, cost and losses are
    drawn, so that a selector tuned on one is tried on the others:

    * ``grid``: :func:`many_networks_table`;
    * ``proportional``: tasks uniform over the non-empty subsets, cost ``0.2 |G| U(0.8, 1.2)``;
    * ``independent``: tasks uniform over the subsets, cost ``U(0.1, 1.5)``;
    * ``heavy-tailed``: tasks uniform over the subsets, cost ``0.05 (1 + Pareto(1.2))``;
    * ``huge-cheap``: ``max(2, M / 500)`` networks serving at least 10 tasks (all of them
      if fewer) at cost ``U(0.2, 0.4)``, losses 10-30 % worse; the rest as ``proportional``;
    * ``decimals``: tasks uniform over the subsets, cost ``U(0.1, 2)`` rounded to 3 decimals;
    * ``every-size``: a size uniform in 1..T, then tasks uniform among the subsets of that
      size, cost ``U(0.25, 1.25)``.

    Losses are uniform ``U(0, 1)`` per network and task for ``independent``,
    ``heavy-tailed`` and ``every-size``; otherwise they follow :func:`paper_like_table`
    (a task's single-task loss, changed a few percent by the tasks it shares with).
    The first ``T`` networks are single-task ones, one per task at the family's cost,
    so every task is covered (:func:`~branchnet.selection.minimum_budget` gives the
    least budget with a solution). Names are ``n<i>``; rows are in the order drawn.
    """
    if family == "grid":
        return many_networks_table(n_tasks, n_candidates, seed)
    if family not in FAMILIES:
        from branchnet.errors import unknown_choice
        raise unknown_choice("table family", family, FAMILIES)
    rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
    tasks = [f"t{i}" for i in range(n_tasks)]
    single = rng.uniform(0.05, 0.2, n_tasks)
    pair = rng.normal(0.0, 0.05, (n_tasks, n_tasks))
    uniform_losses = family in ("independent", "heavy-tailed", "every-size")

    def draw_tasks() -> np.ndarray:
        if family == "every-size":
            return np.sort(rng.choice(n_tasks, size=int(rng.integers(1, n_tasks + 1)), replace=False))
        mask = int(rng.integers(1, 1 << n_tasks))
        return np.flatnonzero([(mask >> t) & 1 for t in range(n_tasks)])

    def draw_cost(size: int) -> float:
        if family in ("proportional", "huge-cheap"):
            return float(0.2 * size * rng.uniform(0.8, 1.2))
        if family == "independent":
            return float(rng.uniform(0.1, 1.5))
        if family == "heavy-tailed":
            return float(0.05 * (1.0 + rng.pareto(1.2)))
        if family == "decimals":
            return float(np.round(rng.uniform(0.1, 2.0), 3))
        return float(rng.uniform(0.25, 1.25))  # every-size

    def draw_losses(group: np.ndarray, worse: float = 0.0) -> dict[str, float]:
        if uniform_losses:
            return {tasks[t]: float(v) for t, v in zip(group.tolist(), rng.uniform(0.0, 1.0, group.size))}
        out = {}
        for t in group.tolist():
            effect = float(np.mean([pair[t, u] for u in group.tolist() if u != t])) if group.size > 1 else 0.0
            out[tasks[t]] = float(single[t] * (1 + effect + 0.01 * (group.size - 1) + worse + rng.normal(0, 0.02)))
        return out

    candidates: list[Candidate] = []
    for t in range(n_tasks):
        group = np.array([t])
        candidates.append(Candidate(f"n{len(candidates)}", draw_cost(1), draw_losses(group)))
    if family == "huge-cheap":
        for _ in range(max(2, n_candidates // 500)):
            size = int(rng.integers(min(10, n_tasks), n_tasks + 1))
            group = np.sort(rng.choice(n_tasks, size=size, replace=False))
            candidates.append(Candidate(f"n{len(candidates)}", float(rng.uniform(0.2, 0.4)),
                                        draw_losses(group, float(rng.uniform(0.1, 0.3)))))
    while len(candidates) < n_candidates:
        group = draw_tasks()
        candidates.append(Candidate(f"n{len(candidates)}", draw_cost(group.size), draw_losses(group)))
    return CandidateTable(tuple(tasks), tuple(candidates[:n_candidates]))

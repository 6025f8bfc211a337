"""The Higher-Order Approximation (HOA; Standley et al., Sec. 3.3.2).

Train only the networks of one and two tasks, then predict every network of three or
more tasks from the pair networks: "a simple average of the first-order networks'
accuracies", i.e. for a group G and a task t in G

    L_hat(G, t) = mean_{u in G, u != t} L({t, u}, t)

where ``L({t, u}, t)`` is the loss on t of the network trained on the pair {t, u}.
Selection then runs on the trained networks and the predicted ones together; the
chosen predicted groups are the ones to train.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from branchnet.errors import BadInput
from branchnet.selection.candidates import Candidate, CandidateTable, group_name


def pair_losses(table: CandidateTable, pair_cost: float | None = None) -> dict[frozenset[str], Candidate]:
    """The pair networks: candidates solving exactly two tasks (of cost ``pair_cost`` if given).

    Raises BadInput when two candidates solve the same pair (say which ``pair_cost`` to use).
    """
    pairs: dict[frozenset[str], Candidate] = {}
    for cand in table.candidates:
        if len(cand.losses) != 2:
            continue
        if pair_cost is not None and not math.isclose(cand.cost, pair_cost, rel_tol=1e-9, abs_tol=1e-12):
            continue
        key = frozenset(cand.losses)
        if key in pairs:
            raise BadInput(f"networks '{pairs[key].name}' and '{cand.name}' both solve the pair "
                           f"{' and '.join(sorted(key))}; give the pair networks' cost (pair_cost) to pick one")
        pairs[key] = cand
    return pairs


def higher_order_approximation(table: CandidateTable, max_size: int | None = None,
                               pair_cost: float | None = None,
                               group_cost: float | Callable[[Sequence[str]], float] | None = None,
                               ) -> CandidateTable:
    """``table`` plus a predicted network for every group of 3..``max_size`` tasks.

    Args:
        table: candidates holding a network for every pair of tasks (and usually the
            single-task networks too).
        max_size: the largest group to predict (default: all tasks).
        pair_cost: use only pair networks of this cost (when pairs come in several widths).
        group_cost: the cost of a predicted group: a number, or a function of the group's
            tasks (e.g. FLOPs of a shared encoder with one head per task, relative). By
            default the cost the pair networks share.

    Returns:
        A new table; each predicted network is named ``group_name(G)`` (tasks in table
        order joined by ``+``) and has ``L_hat(G, t)`` for each t in G. Groups that some
        candidate already solves exactly (a trained network) are not predicted.

    Raises:
        BadInput: a pair network is missing, two solve the same pair, the pair networks'
            costs differ and no ``group_cost`` is given, or ``max_size`` < 3.
    """
    tasks = table.tasks
    max_size = len(tasks) if max_size is None else int(max_size)
    if max_size < 3:
        raise BadInput(f"max_size {max_size} predicts nothing: the approximation fills groups of 3 or more tasks")
    pairs = pair_losses(table, pair_cost)
    for a, b in itertools.combinations(tasks, 2):
        if frozenset((a, b)) not in pairs:
            cost_note = f" of cost {pair_cost:g}" if pair_cost is not None else ""
            raise BadInput(f"no network{cost_note} trained on exactly the pair {a} and {b}; "
                           "the higher-order approximation needs a network for every pair of tasks")
    if group_cost is None:
        costs = sorted({cand.cost for cand in pairs.values()})
        if costs[-1] - costs[0] > 1e-9 * max(1.0, costs[-1]):
            raise BadInput(f"the pair networks' costs differ ({costs[0]:g} to {costs[-1]:g}); "
                           "give group_cost (the cost of a predicted group)")
        group_cost = costs[0]
    cost_of = group_cost if callable(group_cost) else (lambda _group, c=float(group_cost): c)

    trained = {frozenset(cand.losses) for cand in table.candidates}
    predicted: list[Candidate] = []
    for size in range(3, min(max_size, len(tasks)) + 1):
        for group in itertools.combinations(tasks, size):
            if frozenset(group) in trained:
                continue
            losses = {t: math.fsum(pairs[frozenset((t, u))].losses[t] for u in group if u != t) / (size - 1)
                      for t in group}
            predicted.append(Candidate(group_name(group), float(cost_of(group)), losses))
    return table.with_candidates(predicted)

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
from dataclasses import dataclass

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
                               missing_pairs: str = "error") -> CandidateTable:
    """``table`` plus a predicted network for every group of 3..``max_size`` tasks.

    Args:
        table: candidates holding a network for every pair of tasks (and usually the
            single-task networks too).
        max_size: the largest group to predict (default: all tasks).
        pair_cost: use only pair networks of this cost (when pairs come in several widths).
        group_cost: the cost of a predicted group: a number, or a function of the group's
            tasks (e.g. FLOPs of a shared encoder with one head per task, relative). By
            default the cost the pair networks share.
        missing_pairs: "error" (every pair must have a network) or "skip": a task's loss
            is then the mean over the pair networks the group holds, and a task of the
            group that is in none of them is not served by the predicted network (as
            the authors' release does for a table without some pair).

    Returns:
        A new table; each predicted network is named ``group_name(G)`` (tasks in table
        order joined by ``+``) and has ``L_hat(G, t)`` for each t in G. Groups that some
        candidate already solves exactly (a trained network) are not predicted.

    Raises:
        BadInput: a pair network is missing (with ``missing_pairs="error"``), two solve
            the same pair, the pair networks' costs differ and no ``group_cost`` is
            given, or ``max_size`` < 3.
    """
    tasks = table.tasks
    max_size = len(tasks) if max_size is None else int(max_size)
    if max_size < 3:
        raise BadInput(f"max_size {max_size} predicts nothing: the approximation fills groups of 3 or more tasks")
    if missing_pairs not in ("error", "skip"):
        raise BadInput(f"missing_pairs '{missing_pairs}' must be 'error' or 'skip'")
    pairs = pair_losses(table, pair_cost)
    if not pairs:
        raise BadInput("no network trained on exactly two tasks; the higher-order approximation "
                       "predicts larger groups from the pair networks")
    for a, b in itertools.combinations(tasks, 2):
        if frozenset((a, b)) not in pairs and missing_pairs == "error":
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
            losses = {}
            for t in group:
                inside = [pairs[key].losses[t] for key in (frozenset((t, u)) for u in group if u != t) if key in pairs]
                if inside:
                    losses[t] = math.fsum(inside) / len(inside)
            if losses:
                predicted.append(Candidate(group_name(group), float(cost_of(group)), losses))
    return table.with_candidates(predicted)


@dataclass(frozen=True)
class HigherOrder:
    """A table whose groups of three or more tasks are predicted (:func:`predict_from_pairs`).

    Attributes:
        table: the networks serving one or two tasks, as measured, then the predicted ones.
        predicted: the predicted networks' names.
        missing_pairs: the pairs of tasks no network was trained on (their groups'
            losses are averaged over the pairs there are).
        dropped: how many measured networks of three or more tasks were set aside.
    """

    table: CandidateTable
    predicted: tuple[str, ...]
    missing_pairs: tuple[tuple[str, str], ...]
    dropped: int


def group_cost_from_pairs(table: CandidateTable, pairs: dict[frozenset[str], Candidate]
                          ) -> float | Callable[[Sequence[str]], float]:
    """The cost of a predicted group, from the costs in ``table``.

    When every pair network costs the same (the release's tables: 1), that cost.
    Otherwise the encoder-plus-heads model that branchnet's own costs follow: with the
    single-task networks named after their task (cost ``c_t``) and each pair's shared
    part ``e_ab = c_a + c_b - c_ab``, a group G costs ``sum_{t in G} c_t - (|G| - 1) e``
    (``e`` the mean of ``e_ab`` over the pairs inside G), exact when a network costs one
    encoder plus a head per task. BadInput when neither applies.
    """
    costs = sorted({cand.cost for cand in pairs.values()})
    if costs[-1] - costs[0] <= 1e-9 * max(1.0, costs[-1]):
        return costs[0]
    singles = {}
    for task in table.tasks:
        if task in table.names and tuple(table.candidate(task).losses) == (task,):
            singles[task] = table.candidate(task).cost
    lacking = [t for t in table.tasks if t not in singles]
    if lacking:
        raise BadInput(f"the pair networks' costs differ ({costs[0]:g} to {costs[-1]:g}) and there is no "
                       f"single-task network named {lacking[0]} to price the predicted groups from; "
                       "give networks of equal cost per pair, or the single-task networks")
    shared = {key: singles[a] + singles[b] - cand.cost
              for key, cand in pairs.items() for a, b in [sorted(key)]}

    def cost(group: Sequence[str]) -> float:
        inside = [shared[key] for key in (frozenset(p) for p in itertools.combinations(group, 2)) if key in shared]
        encoder = math.fsum(inside) / len(inside) if inside else 0.0
        return math.fsum(singles[t] for t in group) - (len(group) - 1) * encoder

    return cost


def predict_from_pairs(table: CandidateTable) -> HigherOrder:
    """The HOA on any table (Sec. 3.3.2): keep the networks of 1 or 2 tasks, predict the rest.

    The networks serving one or two tasks are taken as measured; every group of three
    or more tasks gets :func:`higher_order_approximation`'s prediction (the mean of the
    task's losses over the pair networks inside the group; pairs missing from the table
    are skipped), priced by :func:`group_cost_from_pairs`. Measured networks of three or
    more tasks are set aside, so with a full table the prediction replaces them, as in
    the paper's comparison.

    Raises:
        BadInput: fewer than three tasks, no pair network, two networks for one pair, a
            task that only networks of three or more tasks solve, or costs that do not
            say what a predicted group costs.
    """
    if len(table.tasks) < 3:
        raise BadInput(f"the higher-order approximation needs at least three tasks; the table has "
                       f"{len(table.tasks)} ({', '.join(table.tasks)})")
    kept = tuple(cand for cand in table.candidates if len(cand.losses) <= 2)
    for task in table.tasks:
        if not any(task in cand.losses for cand in kept):
            raise BadInput(f"no network of one or two tasks solves '{task}'; the higher-order approximation "
                           "keeps only those and predicts the larger groups from the pairs")
    base = CandidateTable(table.tasks, kept)
    seen: dict[frozenset[str], str] = {}
    for cand in kept:
        if len(cand.losses) == 2:
            key = frozenset(cand.losses)
            if key in seen:
                raise BadInput(f"networks '{seen[key]}' and '{cand.name}' both solve the pair "
                               f"{' and '.join(cand.tasks)}; the higher-order approximation needs one "
                               "network per pair (drop one from the table)")
            seen[key] = cand.name
    pairs = pair_losses(base)
    if not pairs:
        raise BadInput("no network trained on exactly two tasks; the higher-order approximation "
                       "predicts larger groups from the pair networks")
    full = higher_order_approximation(base, group_cost=group_cost_from_pairs(base, pairs), missing_pairs="skip")
    missing = tuple((a, b) for a, b in itertools.combinations(table.tasks, 2) if frozenset((a, b)) not in pairs)
    return HigherOrder(full, full.names[len(kept):], missing, len(table.candidates) - len(kept))

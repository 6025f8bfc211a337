"""The active loop: fit, propose, train, refit, until the search has its networks.

docs/design.md, "Learned sharing cost". :func:`run_loop` knows nothing of torch or of the run
store: it calls ``train(proposals) -> observations`` (the search step trains networks through
the run store; the tests and ``tools/bench_search.py`` pass a synthetic oracle,
:mod:`branchnet.learned.oracle`). Proposals come in rounds of ``batch`` (networks trained side
by side), each from the posterior fitted to everything before the round, and proposal k draws
from its own random stream (``key``, k), so the proposals depend on the data and the batch,
never on who trains them. One model serves every budget: the round's proposals take the
budgets in turn.

Resuming: ``proposals`` are those made before (the search's ``proposals.json``); any without
an observation is trained first, then the loop goes on from the next index.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from branchnet.errors import BadInput
from branchnet.learned.model import Observation, SharingModel
from branchnet.learned.propose import Proposal, SearchSpace, propose, recommend
from branchnet.tree.record import Partitions

Trainer = Callable[[Sequence[Proposal]], Sequence[Observation]]


@dataclass
class LoopResult:
    """What the loop leaves: the model fitted to every observation, the observations and the
    proposals in order, the recommended tree of each budget, and the loop's own seconds
    (fitting and proposing, not training) per round."""

    model: SharingModel
    observations: list[Observation]
    proposals: list[Proposal]
    recommended: dict[int, Partitions]
    overhead: list[float] = field(default_factory=list)


def run_loop(model: SharingModel, space: SearchSpace, budgets: Sequence[int], networks: int, train: Trainer, *,
             seeds: Sequence[int], acquisition: str = "thompson", batch: int = 1, key: int = 0,
             observations: Sequence[Observation] = (), proposals: Sequence[Proposal] = (),
             on_round: Callable[[LoopResult], None] | None = None) -> LoopResult:
    """Train up to ``networks`` networks (``observations`` included) chosen by ``acquisition``.

    Args:
        model: the prior (fitted to nothing) or any fit; refitted every round.
        space: the trees and their params; ``budgets`` the params budgets served.
        networks: the total number of networks at the loop's seeds when it stops.
        train: trains proposals, returns one observation each (in any order).
        seeds: the training seeds the loop may use (never the seeds a study judges on).
        acquisition, batch, key: see the module docstring and :mod:`branchnet.learned.propose`.
        observations, proposals: what an earlier run of the loop left (resume).
        on_round: called after every round with the state so far (to save it).

    Raises :class:`BadInput` when ``networks`` is below the number of budgets or ``batch`` < 1.
    """
    budgets = [int(b) for b in budgets]
    if not budgets:
        raise BadInput("give at least one budget")
    if networks < len(budgets):
        raise BadInput(f"--networks {networks} is fewer than the {len(budgets)} budgets; the search needs at least "
                       "one network per budget")
    if batch < 1:
        raise BadInput(f"batch {batch}: propose at least one network per round")
    if not seeds:
        raise BadInput("give the search at least one training seed")
    observed = list(observations)
    log = list(proposals)
    done = {(o.tree_id, o.seed) for o in observed}
    pending = [p for p in log if (p.tree_id, p.seed) not in done]
    result = LoopResult(model, observed, log, {})
    if pending:
        observed += list(train(pending))
    while len(observed) < networks:
        started = time.perf_counter()
        model.fit(observed)
        taken = {(o.tree_id, o.seed) for o in observed} | {(p.tree_id, p.seed) for p in log}
        round_: list[Proposal] = []
        for _ in range(min(batch, networks - len(observed))):
            index = len(log)
            rng = np.random.default_rng([int(key), index])
            proposal = propose(model, space, budgets[index % len(budgets)], list(seeds), index, taken, rng,
                               acquisition)
            taken.add((proposal.tree_id, proposal.seed))
            log.append(proposal)
            round_.append(proposal)
        result.overhead.append(time.perf_counter() - started)
        observed += list(train(round_))
        if on_round is not None:
            on_round(result)
    model.fit(observed)
    result.recommended = {b: recommend(model, space, b) for b in budgets}
    return result

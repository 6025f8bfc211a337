"""Budgeted task-grouping selection (Standley et al., "Which Tasks Should Be Learned Together").

Given trained candidate networks (a cost and a loss per task each), choose the set of
least total loss within an inference budget.

* :mod:`~branchnet.selection.candidates`: ``Candidate``, ``CandidateTable``, the CSV.
* :mod:`~branchnet.selection.standley`: the tab-separated tables of the authors' release.
* :mod:`~branchnet.selection.tables`: either format; a second (test) table, matched and scored.
* :mod:`~branchnet.selection.solution`: ``Selection``, scoring and tie-breaks.
* :mod:`~branchnet.selection.branch_bound`: exact branch and bound (Algorithm 1).
* :mod:`~branchnet.selection.budget_partition`: its partition bound on a budget grid.
* :mod:`~branchnet.selection.milp`: the same problem as a MILP (cross-check).
* :mod:`~branchnet.selection.cover`: the least budget that has any solution.
* :mod:`~branchnet.selection.higher_order`: the higher-order approximation (Sec. 3.3.2).
* :mod:`~branchnet.selection.baselines`: random and worst selections (Sec. 4.3).
* :mod:`~branchnet.selection.report`: per-budget results of ``branchnet select``.
* :mod:`~branchnet.selection.tree_candidate`: a branched tree as a candidate.
"""

from branchnet.selection.branch_bound import select_networks, select_sweep
from branchnet.selection.candidates import (Candidate, CandidateTable, group_name, read_candidates,
                                            write_candidates)
from branchnet.selection.cover import minimum_budget
from branchnet.selection.baselines import expected_random_loss, random_baseline, worst_selection
from branchnet.selection.higher_order import higher_order_approximation, predict_from_pairs
from branchnet.selection.milp import select_milp
from branchnet.selection.solution import Selection
from branchnet.selection.standley import read_standley
from branchnet.selection.tables import match_tables, read_table, rescore
from branchnet.selection.tree_candidate import add_tree_candidate, tree_candidate

__all__ = [
    "Candidate", "CandidateTable", "Selection", "add_tree_candidate", "expected_random_loss", "group_name",
    "higher_order_approximation", "match_tables", "minimum_budget", "predict_from_pairs", "random_baseline",
    "read_candidates", "read_standley", "read_table", "rescore", "select_milp", "select_networks",
    "select_sweep", "tree_candidate", "worst_selection", "write_candidates",
]

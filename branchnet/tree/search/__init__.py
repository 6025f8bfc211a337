"""Search the branched tree of least task dissimilarity under a budget (paper Section 3.2).

Public API:

* :func:`search_tree` -- the tree of least dissimilarity whose params (and FLOPs, and
  modelled latency) fit;
* :func:`pareto_sweep` -- every distinct optimal tree as the params budget grows from the
  all-shared to the all-separate network (the path of the paper's Fig. 5);
* :func:`build_problem` -- the index-form :class:`Problem` behind both.

Two algorithms (one module each): :mod:`~branchnet.tree.search.exact`, a dynamic program over
task subsets that is provably optimal (N <= 10 in about a second), and
:mod:`~branchnet.tree.search.scalable`, linkage starts plus local search for many tasks
(N = 40 in seconds). ``method="auto"`` takes the exact search up to
:data:`AUTO_EXACT_MAX_TASKS` tasks. Ties (dissimilarities within
:data:`~branchnet.tree.search.problem.TIE_TOL`) go to fewer params, then fewer FLOPs, then less
modelled latency, then the lexicographically smaller group-count vector; the rest is deterministic search order.

Latency is a third additive cost beside params and FLOPs: per-stage and per-head seconds
measured on a device (``steps.build.latency_probe``), summed over a tree's nodes like
FLOPs (``sum_d k_d * stage_latency[d] + sum_t head_latency[t]``). That sum is a model of
the real latency (docs/deploy.md, "Latency budgets"); without a latency table nothing
changes (every search returns the trees it returned before).

Every function takes ``cost=`` (:mod:`branchnet.tree.group_cost`: ``"max"``, the paper's and
the default, ``"mean"``, ``"weighted"``, or a :class:`~branchnet.tree.group_cost.GroupCost`
such as the ``sensitivity`` cost); the exact search handles each, the scalable one only the
costs of the ``max`` form (``max``, ``sensitivity``).
"""

from branchnet.tree.search.api import (AUTO_EXACT_MAX_TASKS, METHODS, build_problem, pareto_sweep, resolve_costs,
                                       resolve_latency, search_tree, tree_latency)
from branchnet.tree.search.problem import TIE_TOL, Problem

__all__ = ["search_tree", "pareto_sweep", "build_problem", "resolve_costs", "resolve_latency", "METHODS",
           "AUTO_EXACT_MAX_TASKS"]

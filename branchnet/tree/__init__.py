"""Branched trees: the record and ``tree.json`` (:mod:`~branchnet.tree.record`), what a tree
costs (:mod:`~branchnet.tree.costs`), the search under a budget (:mod:`~branchnet.tree.search`),
the printed and plotted report of a build (:mod:`~branchnet.tree.report`) and graph exports
(:mod:`~branchnet.tree.export`)."""

from branchnet.tree.record import (Partitions, Tree, canonical_partitions, check_partitions, load_tree,
                                   plain_number, save_tree, separate_partitions, shared_partitions,
                                   tree_from_json)
from branchnet.tree.costs import (make_tree, separate_tree, shared_tree, tree_dissimilarity, tree_flops,
                                  tree_params)

__all__ = [
    "Partitions", "Tree", "canonical_partitions", "check_partitions", "load_tree", "plain_number", "save_tree",
    "separate_partitions", "shared_partitions", "tree_from_json", "make_tree", "separate_tree", "shared_tree",
    "tree_dissimilarity", "tree_flops", "tree_params",
]

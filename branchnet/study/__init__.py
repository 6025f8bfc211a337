"""The study of trees of ``branchnet evaluate``: what to train (:mod:`~branchnet.study.jobs`), its
rows (:mod:`~branchnet.study.table`, trees.csv), their statistics (:mod:`~branchnet.study.stats`),
summary (:mod:`~branchnet.study.summary`) and figure (:mod:`~branchnet.study.plot`)."""

from branchnet.study.stats import (Correlation, Difference, mean_difference, paired_difference, pareto_front,
                                   percentile, spearman_correlation, verdict)

__all__ = ["Correlation", "Difference", "mean_difference", "paired_difference", "pareto_front", "percentile",
           "spearman_correlation", "verdict"]

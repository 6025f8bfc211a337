"""Statistics of a study of trees (``branchnet evaluate``): :mod:`branchnet.study.stats`."""

from branchnet.study.stats import (Correlation, Difference, mean_difference, pareto_front, percentile,
                                   spearman_correlation, verdict)

__all__ = ["Correlation", "Difference", "mean_difference", "pareto_front", "percentile", "spearman_correlation",
           "verdict"]

"""branchnet: decide which layers a multi-task vision network should share, by measurement.

The pipeline (see README and docs/design.md): train single-task models, measure their
representation similarity (RSA) at D branch points, search the branched tree of least
task dissimilarity under a budget, train it, and choose budgeted task groupings.
"""

__version__ = "0.3.0"

"""RSA task affinity (Vandenhende et al., Sec. 3.1): features -> RDMs per task and location ->
Spearman between tasks' RDMs (and its bootstrap). Writing the result is the affinity file's
(:mod:`branchnet.affinity.outputs`, shared by every measure).

Modules, one job each:

- :mod:`~branchnet.rsa.sources`: the :class:`FeatureSource` protocol, features from an
  ``.npz`` file or from arrays in memory;
- :mod:`~branchnet.rsa.rdm`: streaming RDMs of one task (:func:`compute_rdms`);
- :mod:`~branchnet.rsa.gram`: Gram matrices in memory or tile by tile from a spill file;
- :mod:`~branchnet.rsa.device`: the same on the features' device (the GPU path);
- :mod:`~branchnet.rsa.affinity`: :func:`rdm_affinity`, :func:`bootstrap_affinity`,
  :func:`compute_affinity`, :func:`affinity_to_data`;
- :mod:`~branchnet.rsa.features`: ``--features F.npz`` to an affinity file.
"""

from branchnet.moved import moved_attribute
from branchnet.rsa.affinity import (AffinityResult, affinity_to_data, bootstrap_affinity, compute_affinity,
                                    rdm_affinity, resampled_affinity)
from branchnet.rsa.features import affinity_from_features
from branchnet.rsa.rdm import Workspace, compute_rdms, default_max_memory, flatten_entry, parse_pool, plan_passes
from branchnet.rsa.sources import ArrayFeatureSource, FeatureBatch, FeatureSource, NpzFeatureSource

__all__ = [
    "AffinityResult", "ArrayFeatureSource", "FeatureBatch", "FeatureSource", "NpzFeatureSource",
    "affinity_from_features", "affinity_to_data", "bootstrap_affinity", "compute_affinity", "compute_rdms",
    "default_max_memory", "flatten_entry", "parse_pool", "plan_passes", "rdm_affinity", "resampled_affinity",
    "Workspace",
]

#: Names that moved to the affinity file's package in 0.3.0 (docs/architecture.md, "Moved modules").
_MOVED = {"output_paths": "branchnet.affinity.outputs", "write_affinity_outputs": "branchnet.affinity.outputs",
          "plot_affinity_by_depth": "branchnet.affinity.plots", "plot_affinity_heatmaps": "branchnet.affinity.plots"}


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)

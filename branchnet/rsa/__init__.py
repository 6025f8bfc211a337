"""RSA task affinity (Vandenhende et al., Sec. 3.1): RDMs per task and location, Spearman
between tasks' RDMs, bootstrap, figures.

Modules, one job each:

- :mod:`~branchnet.rsa.sources`: the :class:`FeatureSource` protocol, features from an
  ``.npz`` file or from arrays in memory;
- :mod:`~branchnet.rsa.rdm`: streaming RDMs of one task (:func:`compute_rdms`);
- :mod:`~branchnet.rsa.gram`: Gram matrices in memory or tile by tile from a spill file;
- :mod:`~branchnet.rsa.affinity`: :func:`rdm_affinity`, :func:`bootstrap_affinity`,
  :func:`compute_affinity`, :func:`affinity_to_data`;
- :mod:`~branchnet.rsa.plots` and :mod:`~branchnet.rsa.outputs`: figures and files.
"""

from branchnet.rsa.affinity import (AffinityResult, affinity_to_data, bootstrap_affinity, compute_affinity,
                                    rdm_affinity, resampled_affinity)
from branchnet.rsa.outputs import affinity_from_features, output_paths, write_affinity_outputs
from branchnet.rsa.rdm import Workspace, compute_rdms, default_max_memory, flatten_entry, parse_pool, plan_passes
from branchnet.rsa.sources import ArrayFeatureSource, FeatureBatch, FeatureSource, NpzFeatureSource

__all__ = [
    "AffinityResult", "ArrayFeatureSource", "FeatureBatch", "FeatureSource", "NpzFeatureSource",
    "affinity_from_features", "affinity_to_data", "bootstrap_affinity", "compute_affinity", "compute_rdms",
    "default_max_memory", "flatten_entry", "output_paths", "parse_pool", "plan_passes",
    "plot_affinity_by_depth", "plot_affinity_heatmaps", "rdm_affinity", "resampled_affinity",
    "Workspace", "write_affinity_outputs",
]


def __getattr__(name: str):
    # The figures need matplotlib: imported only when asked for.
    if name in ("plot_affinity_by_depth", "plot_affinity_heatmaps"):
        from branchnet.rsa import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'branchnet.rsa' has no attribute '{name}'")

"""Moved in 0.3.0: the writer of every measure to :mod:`branchnet.affinity.outputs`, the
``--features`` pipeline to :mod:`branchnet.rsa.features`; this old path goes in 0.4.0."""

import warnings

from branchnet.affinity.outputs import affinity_json, check_out_path, output_paths, write_affinity_outputs
from branchnet.rsa.features import affinity_from_features

warnings.warn("branchnet.rsa.outputs moved to branchnet.affinity.outputs and branchnet.rsa.features; the old "
              "path goes in branchnet 0.4.0", DeprecationWarning, stacklevel=2)

__all__ = ["affinity_from_features", "affinity_json", "check_out_path", "output_paths", "write_affinity_outputs"]

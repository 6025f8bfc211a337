"""Task affinity as a file: the ``affinity.npz`` format every measure writes (RSA, FAFS, TAG)
and every consumer reads (build, export, evaluate). See :mod:`branchnet.affinity.file`; the
writer of the file with ``affinity.json`` and the figures beside it is
:mod:`branchnet.affinity.outputs` (figures: :mod:`branchnet.affinity.plots`); the FAFS measure
(from per-image losses) is :mod:`branchnet.affinity.fafs`, the per-image losses of a trained
model :mod:`branchnet.affinity.losses` (needs torch, imported on its own), TAG's lookahead
:mod:`branchnet.affinity.tag`. RSA, which needs features, is :mod:`branchnet.rsa`."""

from branchnet.affinity.file import AFFINITY_ATOL, AffinityData, load_affinity, save_affinity
from branchnet.affinity.fafs import fafs_affinity, fafs_matrix, load_losses, save_losses

__all__ = ["AFFINITY_ATOL", "AffinityData", "load_affinity", "save_affinity", "fafs_affinity", "fafs_matrix",
           "load_losses", "save_losses"]

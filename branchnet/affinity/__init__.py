"""Task affinity as a file: the ``affinity.npz`` format every measure writes (RSA, FAFS, TAG)
and every consumer reads (build, export, evaluate). See :mod:`branchnet.affinity.file`; the
FAFS measure (from per-image losses) is :mod:`branchnet.affinity.fafs`, the per-image losses
of a trained model :mod:`branchnet.affinity.losses` (needs torch, imported on its own)."""

from branchnet.affinity.file import AFFINITY_ATOL, AffinityData, load_affinity, save_affinity
from branchnet.affinity.fafs import fafs_affinity, fafs_matrix, load_losses, save_losses

__all__ = ["AFFINITY_ATOL", "AffinityData", "load_affinity", "save_affinity", "fafs_affinity", "fafs_matrix",
           "load_losses", "save_losses"]

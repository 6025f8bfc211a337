"""Task affinity as a file: the ``affinity.npz`` format every measure writes (RSA, FAFS, TAG)
and every consumer reads (build, export, evaluate). See :mod:`branchnet.affinity.file`."""

from branchnet.affinity.file import AFFINITY_ATOL, AffinityData, load_affinity, save_affinity

__all__ = ["AFFINITY_ATOL", "AffinityData", "load_affinity", "save_affinity"]

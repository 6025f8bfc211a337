"""What an affinity measure is: the evidence it is computed from and how that evidence becomes an
affinity file (:class:`~branchnet.affinity.file.AffinityData`, symmetric with ones on the diagonal).

Each measure's module defines its :class:`Measure` (RSA: :data:`branchnet.rsa.affinity.RSA`;
FAFS: :data:`branchnet.affinity.fafs.FAFS`; TAG: :data:`branchnet.affinity.tag.TAG`); the
registry of measures, with how each gathers its evidence from a run directory, is
:data:`branchnet.steps.affinity.MEASURES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from branchnet.affinity.file import AffinityData


@dataclass(frozen=True)
class Measure:
    """An affinity measure.

    Attributes:
        name: the ``measure`` recorded in its files (``rsa``, ``fafs``, ``tag`` ...).
        evidence: what it is computed from, in words with the shape.
        evidence_shape: (N tasks, D locations, K images) -> the shape of the evidence array.
        from_evidence: (evidence, N task names, D location names) -> the validated affinity.
    """

    name: str
    evidence: str
    evidence_shape: Callable[[int, int, int], tuple[int, ...]]
    from_evidence: Callable[[np.ndarray, Sequence[str], Sequence[str]], AffinityData]

"""``branchnet affinity --features F.npz --out A.npz``: the RSA affinity of features extracted
elsewhere, written as an affinity file (:mod:`branchnet.affinity.outputs`)."""

from __future__ import annotations

import os
from pathlib import Path

from branchnet.affinity.outputs import check_out_path, write_affinity_outputs
from branchnet.rsa.affinity import affinity_to_data, compute_affinity
from branchnet.rsa.sources import NpzFeatureSource


def affinity_from_features(features: str | os.PathLike, out: str | os.PathLike, *, images: int | None = None,
                           center: str = "images", pool: int | None = None, bootstrap: int = 0, seed: int = 0,
                           save_rdms: bool = False, max_memory: int | None = None, device: str = "cpu",
                           progress: bool = True) -> dict[str, Path]:
    """``branchnet affinity --features F.npz --out A.npz``: affinity of features extracted elsewhere.

    Reads ``features`` (docs/design.md own-features format) through
    :class:`~branchnet.rsa.sources.NpzFeatureSource`, computes the affinity
    (:func:`~branchnet.rsa.affinity.compute_affinity`; spill files, if any, go beside
    ``out``) and writes the outputs (:func:`~branchnet.affinity.outputs.write_affinity_outputs`). Nothing is written
    when the input is bad.
    """
    out = check_out_path(out)
    source = NpzFeatureSource(features)
    result = compute_affinity(source, images=images, center=center, pool=pool, bootstrap=bootstrap, seed=seed,
                              max_memory=max_memory, spill_dir=out.parent if str(out.parent) else Path("."),
                              device=device, keep_rdms=save_rdms, progress=progress)
    settings = dict(result.settings, features=str(features))
    return write_affinity_outputs(affinity_to_data(result), out, settings)

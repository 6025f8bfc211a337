"""The ``branchnet export-model`` step: a trained ``model.pt`` as a standalone inference artefact.

:func:`export_model` reads any network directory's ``model.pt`` (single-task, branched or
candidate; :func:`branchnet.model_file.load_model`, ``torch.load(weights_only=True)``),
and writes it in one of :data:`branchnet.deploy.export.FORMATS` beside it
(:func:`branchnet.runs.artefact_path`) or at ``out``, checked against the eager network
(:func:`branchnet.deploy.export.export_network`). How to reload it without branchnet:
docs/deploy.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from branchnet.deploy.export import ExportResult, check_format, export_network


def export_model(model_path: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None,
                 input_size: tuple[int, int] | None = None, seed: int = 0) -> ExportResult:
    """Export ``model_path`` as ``fmt`` to ``out`` (default beside it); returns what was written.

    ``input_size`` (H, W) defaults to the model's training image size. Raises
    :class:`~branchnet.errors.BadInput` (nothing written) for an unknown format, a file
    that is not a branchnet model, a bad size or a missing ONNX extra.
    """
    from branchnet.runs import artefact_path
    from branchnet.steps.predict import load_for_prediction

    fmt = check_format(fmt)
    loaded = load_for_prediction(model_path)
    path = Path(out) if out is not None else artefact_path(model_path, fmt)
    result = export_network(loaded.model, fmt, path, input_size, seed=seed)
    result.notes.insert(0, f"{loaded.kind} network: tasks {', '.join(loaded.model.task_names)}, "
                           f"groups per stage {tuple(len(p) for p in loaded.model.partitions)}")
    return result

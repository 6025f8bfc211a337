"""Which torch device to run on: ``auto`` means cuda when present (this process's GPU)."""

from __future__ import annotations

import torch

from branchnet.errors import BadInput


def resolve_device(spec: str | torch.device = "auto", what: str = "device") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a torch device.

    ``auto`` picks cuda when a GPU is present (under torchrun, this rank's GPU), else
    the CPU. Raises :class:`BadInput` (naming ``what``, e.g. ``--device``) for anything
    else, or for cuda without a GPU.
    """
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise BadInput(f"{what} '{spec}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise BadInput(f"{what} '{spec}' is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"{what} '{spec}' was asked for but no CUDA GPU is available; use auto or cpu")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device

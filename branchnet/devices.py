"""Which torch device to run on: ``auto`` means cuda when present (this process's GPU).

:func:`check_device` is the one check of a device setting (``--device``, ``train.device``,
``--profile-device``); every command runs it up front, before it reads data or writes a file
(docs/design.md, "Errors"), and :func:`resolve_device` runs it again where the device is used.
"""

from __future__ import annotations

import torch

from branchnet.errors import BadInput


def check_device(spec: str | torch.device = "auto", what: str = "device") -> torch.device:
    """Check that ``spec`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) names a device this machine has.

    Returns the device without touching the GPU (no CUDA context is made: under torchrun each rank
    picks its GPU later); ``auto`` becomes ``cuda`` or ``cpu``. Raises :class:`BadInput` naming
    ``what`` (e.g. ``--device``) for anything else, for cuda without a GPU, or for a GPU index
    this machine does not have.
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
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise BadInput(f"{what} '{spec}' was asked for but this machine has {count} CUDA GPU(s) "
                           f"(cuda:0..cuda:{count - 1}); use one of them, auto or cpu")
    return device


def resolve_device(spec: str | torch.device = "auto", what: str = "device") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a torch device (:func:`check_device`), with
    ``cuda`` made this process's current GPU (under torchrun, this rank's)."""
    device = check_device(spec, what)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device

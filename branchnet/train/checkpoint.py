"""The per-epoch checkpoint of a training (``checkpoint.pt``): what it holds, and continuing from it.

After every epoch the loop writes (rank 0, atomically) the model, the optimiser, the loss
weighting, the gradient scaler, every hook's state, the history, the step and epoch counters,
the time and images so far, and the fingerprint of the settings; ``--resume`` continues only a
checkpoint with the same fingerprint and number of epochs (:func:`resume`), so a resumed run
equals the uninterrupted one. With ``train.keep_checkpoints`` the loop also keeps each epoch's
weights (:func:`epoch_weights`, ``epoch<E>.pt``, read by ``branchnet affinity --epoch E``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from branchnet.atomic import load_checkpoint
from branchnet.errors import BadInput
from branchnet.runs import EPOCH_FORMAT, checkpoint_mismatch
from branchnet.train.hooks import TrainingHook
from branchnet.train.precision import Precision
from branchnet.train.weighting import LossWeighting

CHECKPOINT_FORMAT = "branchnet.checkpoint/2"
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class Progress:
    """Where a training stands: epochs and optimiser steps done, the history so far, and the
    seconds and images of the parts run before this process (0 for a fresh start)."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0
    #: The hooks' saved states by name, given back before ``on_fit_start``.
    hooks: dict[str, Any] = field(default_factory=dict)


def check_resumable(path: Path, fingerprint: Mapping[str, Any] | None, epochs: int | None, *,
                    map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` if ``--resume`` can continue it, else :class:`BadInput`: a corrupt
    file or one that is not a checkpoint, one written by another version of branchnet, or (when
    given) another ``fingerprint`` or number of ``epochs``. Commands that resume several networks
    (``evaluate``, ``search``) call it for each before their first write."""
    state = load_checkpoint(path, map_location=map_location)
    why = None if state.get("format") == CHECKPOINT_FORMAT else "it was written by another version of branchnet"
    if why is None and fingerprint is not None:
        why = checkpoint_mismatch(state.get("fingerprint"), fingerprint)
    if why is None and epochs is not None and state.get("epochs") != epochs:
        why = f"epochs {state.get('epochs')} -> {epochs}"
    if why is not None:
        raise BadInput(f"checkpoint {path} cannot be resumed with these settings ({why}); "
                       "resume with the same settings, or drop --resume to start over")
    return state


def resume(path: Path, fingerprint: Mapping[str, Any], epochs: int, device: torch.device, model: nn.Module,
           optimizer: torch.optim.Optimizer, weighting: LossWeighting, precision: Precision) -> Progress:
    """Load the checkpoint at ``path`` into the model, optimiser, weighting and scaler.

    :class:`BadInput` when it was written with another fingerprint, another number of epochs
    or by another version of branchnet.
    """
    state = check_resumable(path, fingerprint, epochs, map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    weighting.load_state_dict(state["weighting"])
    if precision.scaler is not None and state.get("scaler"):
        precision.scaler.load_state_dict(state["scaler"])
    return Progress(epoch=state["epoch"], step=state["step"], history=state["history"],
                    seconds=float(state.get("seconds", 0.0)), images=int(state.get("images", 0)),
                    hooks=state.get("hooks") or {})


def training_state(fingerprint: Mapping[str, Any], epochs: int, progress: Progress, model: nn.Module,
                   optimizer: torch.optim.Optimizer, weighting: LossWeighting, precision: Precision,
                   hooks: Sequence[TrainingHook]) -> dict[str, Any]:
    """The content of ``checkpoint.pt`` after epoch ``progress.epoch`` (plain data and tensors only)."""
    return {
        "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epochs": epochs,
        "epoch": progress.epoch, "step": progress.step, "history": progress.history,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "weighting": weighting.state_dict(),
        "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
        "hooks": {hook.name: hook.state_dict() for hook in hooks},
        "seconds": progress.seconds, "images": progress.images,
    }


def epoch_weights(fingerprint: Mapping[str, Any], epoch: int, epochs: int, model: nn.Module) -> dict[str, Any]:
    """The content of ``epoch<E>.pt``: the weights after epoch ``epoch`` (1-based) and the fingerprint."""
    return {"format": EPOCH_FORMAT, "fingerprint": fingerprint, "epoch": epoch, "epochs": epochs,
            "model": model.state_dict()}

"""The early-stopping approximation (Standley et al., Sec. 3.3.1): train each candidate for a
fraction of the configured optimiser steps."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EsaSchedule:
    """How long each network trains (Sec. 3.3.1, the early-stopping approximation).

    Attributes:
        fraction: the share F of the configured optimiser steps.
        full_steps: configured steps, ``epochs x batches_per_epoch`` on the whole split.
        epochs: epochs actually run, ``ceil(target / batches_per_epoch)``.
        batches: batches per epoch actually run.
        train_images: images per epoch (the whole split, or a fixed random subset of
            ``batches x batch_size x world_size`` images).
        steps: ``epochs x batches``: ``round(F x full_steps)`` (at least 1) to within
            ``epochs - 1`` steps above.
        subset: True when a subset of the training split is used.
    """

    fraction: float
    full_steps: int
    epochs: int
    batches: int
    train_images: int
    steps: int
    subset: bool


def esa_schedule(n_train: int, batches_per_epoch: int, epochs: int, fraction: float, batch_size: int,
                 world_size: int = 1) -> EsaSchedule:
    """The schedule that runs ``fraction`` of ``epochs x batches_per_epoch`` optimiser steps.

    Target ``S = max(1, round(F x full_steps))`` steps. They are run as
    ``E = ceil(S / batches_per_epoch)`` epochs of ``ceil(S / E)`` batches over a fixed
    random subset of the training split (the same subset for every network), so each
    image is seen at most once more often than when stopping the full schedule early,
    and the learning-rate schedule runs its whole course over the shortened run (each
    candidate is a finished short training, not a snapshot with a high learning rate).
    ``fraction = 1`` is exactly the configured training on the whole split.
    """
    full = epochs * batches_per_epoch
    if fraction >= 1.0:
        return EsaSchedule(1.0, full, epochs, batches_per_epoch, n_train, full, False)
    target = max(1, math.floor(fraction * full + 0.5))
    run_epochs = math.ceil(target / batches_per_epoch)
    batches = math.ceil(target / run_epochs)
    if batches >= batches_per_epoch:
        return EsaSchedule(fraction, full, run_epochs, batches_per_epoch, n_train, run_epochs * batches_per_epoch,
                           False)
    images = batches * batch_size * world_size
    return EsaSchedule(fraction, full, run_epochs, batches, images, run_epochs * batches, True)

"""Multi-task loss weighting (survey, Section 3.1).

* ``uniform``: ``L = sum_i w_i L_i`` with fixed ``w_i`` (``train.loss_weights``, default 1),
  as in the branched-networks paper.
* ``uncertainty`` (Kendall et al., survey Eq. 6): ``L = sum_i exp(-s_i) L_i / 2 + s_i / 2``
  with learnable ``s_i = log sigma_i^2``.
* ``dwa`` (Liu et al., survey Eq. 8): ``w_i(t) = N exp(r_i(t-1)/T) / sum_n exp(r_n(t-1)/T)``,
  ``r_n(t-1) = L_n(t-1) / L_n(t-2)`` from epoch-mean losses, T = 2; weights 1 for the
  first two epochs.
* ``gradnorm`` (Chen et al., survey Eq. 7): learnable ``w_i`` updated every step to move
  ``G_i = ||grad_W w_i L_i||`` towards ``mean(G) * r_i^alpha`` (alpha = 1.5) on the last
  layer W shared by all tasks, then renormalised to sum to N.

The fixed ``train.loss_weights`` multiply every scheme's weights.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from branchnet.errors import BadInput
from branchnet.registry import Registry


class LossWeighting(nn.Module):
    """Uniform (fixed) weights; the base class of the adaptive schemes."""

    name = "uniform"
    #: Whether the scheme needs the last shared layer W (GradNorm's gradient norms are taken there).
    needs_shared_layer = False

    def __init__(self, tasks: Sequence[str], fixed: dict[str, float] | None = None) -> None:
        super().__init__()
        self.tasks = list(tasks)
        fixed = fixed or {}
        unknown = sorted(set(fixed) - set(self.tasks))
        if unknown:
            raise BadInput(f"train.loss_weights names '{unknown[0]}', which is not a task of this "
                           f"network ({', '.join(self.tasks)})")
        self.register_buffer("fixed", torch.tensor([float(fixed.get(t, 1.0)) for t in self.tasks]))

    def dynamic_weights(self) -> torch.Tensor:
        return torch.ones(len(self.tasks), device=self.fixed.device)

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The total loss to back-propagate."""
        weights = self.fixed * self.dynamic_weights().detach()
        return sum(weights[i] * losses[t] for i, t in enumerate(self.tasks))

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        """Called once per epoch with the epoch's mean training loss per task."""

    def weights(self) -> dict[str, float]:
        """Current effective weight per task (for logs)."""
        w = (self.fixed * self.dynamic_weights().detach()).tolist()
        return dict(zip(self.tasks, w))


class UncertaintyWeighting(LossWeighting):
    name = "uncertainty"

    def __init__(self, tasks, fixed=None) -> None:
        super().__init__(tasks, fixed)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def dynamic_weights(self) -> torch.Tensor:
        return 0.5 * torch.exp(-self.log_vars)

    def combine(self, losses):
        total = 0.0
        for i, t in enumerate(self.tasks):
            total = total + self.fixed[i] * (0.5 * torch.exp(-self.log_vars[i]) * losses[t] + 0.5 * self.log_vars[i])
        return total


class DWAWeighting(LossWeighting):
    name = "dwa"

    def __init__(self, tasks, fixed=None, temperature: float = 2.0) -> None:
        super().__init__(tasks, fixed)
        self.temperature = temperature
        # the last two epoch-mean losses (row 1 newest) and how many epochs were seen
        self.register_buffer("history", torch.zeros(2, len(self.tasks)))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("current", torch.ones(len(self.tasks)))

    def dynamic_weights(self) -> torch.Tensor:
        return self.current

    def epoch_end(self, mean_losses):
        row = torch.tensor([mean_losses[t] for t in self.tasks], device=self.history.device)
        self.history = torch.stack([self.history[1], row])
        self.seen += 1
        if int(self.seen) >= 2:
            rate = self.history[1] / self.history[0].clamp_min(1e-12)
            self.current = len(self.tasks) * torch.softmax(rate / self.temperature, 0)


class GradNormWeighting(LossWeighting):
    name = "gradnorm"
    needs_shared_layer = True

    def __init__(self, tasks, fixed=None, shared: nn.Parameter | None = None, alpha: float = 1.5,
                 lr: float = 0.025) -> None:
        super().__init__(tasks, fixed)
        if shared is None:
            raise BadInput("gradnorm weighting needs a layer shared by all tasks; this tree splits tasks "
                           "at the first stage (use uniform, uncertainty or dwa)")
        self.shared = [shared]  # not a submodule: it belongs to the network
        self.alpha = alpha
        self.lr = lr
        self.register_buffer("current", torch.ones(len(self.tasks)))
        self.register_buffer("initial", torch.zeros(len(self.tasks)))

    def dynamic_weights(self) -> torch.Tensor:
        return self.current

    def combine(self, losses):
        import torch.distributed as dist

        values = torch.stack([losses[t].detach().float() for t in self.tasks])
        norms = torch.stack([
            torch.autograd.grad(losses[t] * self.fixed[i], self.shared[0], retain_graph=True)[0].float().norm()
            for i, t in enumerate(self.tasks)])
        if dist.is_available() and dist.is_initialized():
            both = torch.cat([values, norms]).to(self.current.device)
            dist.all_reduce(both)
            both /= dist.get_world_size()
            values, norms = both[: len(self.tasks)], both[len(self.tasks):]
        values, norms = values.to(self.current.device), norms.to(self.current.device)
        # the first step's losses are the reference L_i(0) (set on the device, no read-back)
        self.initial = torch.where(self.initial > 0, self.initial, values.clamp_min(1e-12))
        ratio = values / self.initial
        rate = ratio / ratio.mean()
        g = self.current * norms
        target = g.mean() * rate ** self.alpha
        # d/dw_i sum_j |w_j n_j - target_j| = sign(w_i n_i - target_i) n_i  (target held constant)
        step = torch.sign(g - target) * norms
        updated = (self.current - self.lr * step).clamp_min(1e-3)
        self.current = updated * len(self.tasks) / updated.sum()
        return super().combine(losses)


#: ``train.weighting``: name -> weighting class (constructed with the tasks and the fixed weights;
#: a class with ``needs_shared_layer`` also gets GradNorm's shared layer W).
WEIGHTINGS: Registry[type[LossWeighting]] = Registry("weighting", {
    cls.name: cls for cls in (LossWeighting, UncertaintyWeighting, DWAWeighting, GradNormWeighting)})


def build_weighting(name: str, tasks: Sequence[str], fixed: dict[str, float] | None = None,
                    shared: nn.Parameter | None = None) -> LossWeighting:
    """The weighting scheme ``name`` for ``tasks``; ``shared`` is GradNorm's layer W."""
    if name not in WEIGHTINGS:
        raise BadInput(f"unknown weighting '{name}'; valid: {', '.join(WEIGHTINGS)}")
    cls = WEIGHTINGS[name]
    if cls.needs_shared_layer:
        return cls(tasks, fixed, shared=shared)
    return cls(tasks, fixed)


def weighting_for(model: nn.Module, tasks: Sequence[str], train: Any) -> LossWeighting:
    """The config's weighting (``train.weighting``, ``train.loss_weights``) of ``model``'s ``tasks``;
    GradNorm gets the model's last shared layer (``model.last_shared_weight()``)."""
    scheme = WEIGHTINGS.get(train.weighting)
    shared = model.last_shared_weight() if scheme is not None and scheme.needs_shared_layer else None
    return build_weighting(train.weighting, tasks, train.loss_weights, shared)

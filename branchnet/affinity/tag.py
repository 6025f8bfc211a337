"""TAG: the lookahead inter-task affinity of Fifty et al. ("Efficiently Identifying Task Groupings for
Multi-Task Learning", NeurIPS 2021), measured at every branch point.

docs/design.md, "TAG affinity". During all-shared training, at a step with batch X, encoder
parameters θ (stages 0..D-1) and heads: for each task i and location d, the lookahead

    θ' = θ - lr * grad_{θ_0..d} L_i(X)          (only stages 0..d move; the heads stay)
    Z_d[i -> j] = 1 - L_j(X; θ') / L_j(X; θ)     for every task j

(the paper's Eq. 1-2; d = D-1 is TAG as published: the whole shared encoder). Z_d is averaged
over the measured steps; the affinity at d is ``S = (Z_d + Z_d^T) / 2`` divided by its largest
off-diagonal ``|S[i, j]|``, with ones on the diagonal (:func:`tag_affinity`).

How the step is taken (learnt from the authors' code, google-research/tag):

* the lookahead uses the step's own batch: no second pass over the data; ``L_j(X; θ)`` is
  the loss of that batch before the step, in training mode (BatchNorm normalises with the
  batch's statistics) like the training forward pass; the BatchNorm running statistics are
  left untouched (the forward passes run on copies of the buffers), and any dropout draws
  the same mask for the loss before and every loss after (the heads run from one seed), so
  Z sees only the change of the encoder;
* the update is the plain gradient step of the paper's Eq. 1 with the step's learning rate
  (the authors' CelebA code folds in SGD's momentum; our optimiser may be Adam, whose step
  is no function of this batch's gradient alone) and no division by the learning rate (the
  authors' code divides by it; the design's Z does not, so steps late in a decaying
  schedule weigh less);
* one forward pass at θ and one backward pass per task give every task's gradient for all
  stages; per task, the evaluation at the D locations shares work: the stages that moved
  (0..d) are computed once along a chain, ``stage_d(θ'_d)`` after ``stage_{d-1}(θ'_{d-1})``,
  and only the unmoved tail d+1..D-1 and the heads are evaluated per location:
  D + D(D-1)/2 stage evaluations per task instead of D^2, all without gradients.

Under torch.distributed each rank holds its part of the global batch: the task gradients are
averaged over ranks (as DDP averages the training gradient) and so are the losses before and
after, so every rank computes the same Z; with batch-independent layers (BatchNorm in eval
mode) two ranks with B/2 images each give the Z of one process with the B images up to
float32 rounding (tested). In training mode each rank normalises with its own half-batch
statistics, as DDP training itself does.

Cost per measured step: one forward and N backward passes through the whole network and
about N (1 + (D-1)/2) forward passes without gradients; :class:`TagHook` measures every
``affinity.tag_every`` steps (docs/affinity.md, "TAG" has the measured overhead).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.func import functional_call

from branchnet.affinity.file import AffinityData, affinity_data
from branchnet.affinity.measure import Measure
from branchnet.errors import BadInput
from branchnet import distributed as dist_utils
from branchnet.train.hooks import FitContext, TrainingHook


def _flat_mean(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors averaged over ranks (one all-reduce of their concatenation)."""
    if not dist_utils.is_distributed():
        return tensors
    flat = dist_utils.all_reduce_mean(torch.cat([t.reshape(-1) for t in tensors]))
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


def lookahead_affinity(model: Any, tasks: Sequence[Any], images: torch.Tensor, targets: Mapping[str, torch.Tensor],
                       lr: float, *, head_seed: int | None = None) -> torch.Tensor:
    """``Z`` (D, N, N) float64 of one step (module docstring): ``Z[d, i, j] = 1 - L_j(θ'_{i,d}) / L_j(θ)``.

    ``model`` is an all-shared :class:`~branchnet.nn.BranchedNet` (one node per stage),
    ``images`` (B, 3, H, W) and ``targets`` ``{task: target}`` the step's batch on the model's
    device, ``lr`` the step's learning rate. The model's parameters, buffers and gradients are
    left as they were; torch's random state too. ``head_seed`` seeds the heads' random draws
    (dropout), the same for every evaluation.
    """
    names = [t.name for t in tasks]
    depth = model.num_stages
    nodes = [model.nodes[model.node_key(d, 0)] for d in range(depth)]
    params = [dict(node.named_parameters()) for node in nodes]
    buffers = [{k: b.clone() for k, b in node.named_buffers()} for node in nodes]
    heads = {t: {**dict(model.heads[t].named_parameters()),
                 **{k: b.clone() for k, b in model.heads[t].named_buffers()}} for t in names}
    size = tuple(images.shape[-2:])
    devices = [images.device] if images.device.type == "cuda" else []

    def stage(d: int, weights: Mapping[str, torch.Tensor], h: Any) -> Any:
        return functional_call(nodes[d], {**weights, **buffers[d]}, (h,))

    def losses(features: Any) -> torch.Tensor:
        out = []
        for task in tasks:
            if head_seed is not None:
                torch.manual_seed(head_seed)
            pred = functional_call(model.heads[task.name], heads[task.name], (features, size))
            out.append(task.loss(pred.float(), targets[task.name]))
        return torch.stack(out)

    with torch.random.fork_rng(devices=devices):
        h = images
        for d in range(depth):
            h = stage(d, params[d], h)
        before = losses(h)
        flat = [p for d in range(depth) for p in params[d].values()]
        gradients = []
        for i in range(len(names)):
            grads = torch.autograd.grad(before[i], flat, retain_graph=i < len(names) - 1, allow_unused=True)
            gradients.append(_flat_mean([torch.zeros_like(p) if g is None else g for p, g in zip(flat, grads)]))
        before = dist_utils.all_reduce_mean(before.detach()).double()
        z = torch.empty(depth, len(names), len(names), dtype=torch.float64, device=images.device)
        with torch.no_grad():
            for i in range(len(names)):
                grads = iter(gradients[i])
                moved = [{k: p - lr * next(grads) for k, p in params[d].items()} for d in range(depth)]
                chain = images
                for d in range(depth):
                    chain = stage(d, moved[d], chain)
                    h = chain
                    for e in range(d + 1, depth):
                        h = stage(e, params[e], h)
                    after = dist_utils.all_reduce_mean(losses(h)).double()
                    z[d, i] = 1.0 - after / before.clamp_min(torch.finfo(torch.float64).tiny)
    return z


def tag_affinity(z: np.ndarray) -> np.ndarray:
    """The TAG affinity (D, N, N) of mean lookahead matrices ``z`` (D, N, N): per location
    ``S = (Z + Z^T) / 2`` over its largest off-diagonal ``|S|``, ones on the diagonal."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3 or z.shape[1] != z.shape[2] or z.shape[1] < 2:
        raise BadInput(f"TAG needs lookahead matrices of shape (D, N, N) with N >= 2 tasks, got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise BadInput("TAG's lookahead matrices hold NaN or Inf (a loss was zero or diverged); retrain the "
                       "TAG network with --force and other training settings")
    s = (z + z.transpose(0, 2, 1)) / 2.0
    off = ~np.eye(z.shape[1], dtype=bool)
    out = np.empty_like(s)
    for d in range(s.shape[0]):
        scale = float(np.max(np.abs(s[d][off])))
        if scale == 0.0:
            raise BadInput(f"TAG measured no effect of any task on another at location {d} (every lookahead "
                           "left the losses unchanged); train with a larger learning rate or more steps")
        out[d] = s[d] / scale
        np.fill_diagonal(out[d], 1.0)
    return out


def tag_from_lookahead(z: np.ndarray, tasks: Sequence[str], locations: Sequence[str]) -> AffinityData:
    """The TAG affinity file of mean lookahead matrices ``z`` (D, N, N), without costs."""
    return affinity_data(tag_affinity(z), tasks, locations, "tag").validate("TAG affinity")


#: TAG: how one task's lookahead update changes the others' losses, at every location.
TAG = Measure("tag", "mean lookahead matrices Z (D, N, N) measured during all-shared training",
              lambda n, d, k: (d, n, n), tag_from_lookahead)


class TagHook(TrainingHook):
    """Measures :func:`lookahead_affinity` on the batch of every ``every``-th step (steps 0, every, ...)
    and keeps the sum of the Z matrices on the device (no read-back inside a step); :meth:`mean`
    is the average over the measured steps."""

    name = "tag"

    def __init__(self, every: int, seed: int = 0) -> None:
        if every < 1:
            raise BadInput(f"affinity.tag_every must be a positive number of training steps, got {every}")
        self.every = int(every)
        self.seed = int(seed)
        self.total: torch.Tensor | None = None
        self.count = 0
        self._loaded: dict[str, Any] | None = None

    def on_fit_start(self, ctx: FitContext) -> None:
        if self._loaded and self._loaded.get("total") is not None:
            self.total = self._loaded["total"].to(ctx.device, torch.float64)
            self.count = int(self._loaded["count"])

    def before_step(self, ctx: FitContext, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        if ctx.step % self.every:
            return
        z = lookahead_affinity(ctx.model, ctx.tasks, images, targets, ctx.lr,
                               head_seed=(self.seed * 1_000_003 + ctx.step) % (2**63 - 1))
        self.total = z if self.total is None else self.total + z
        self.count += 1

    def on_epoch_end(self, ctx: FitContext, record: dict[str, Any]) -> None:
        record["tag_steps"] = self.count

    def mean(self) -> np.ndarray:
        """(D, N, N) float64: Z averaged over the measured steps."""
        if self.total is None or self.count == 0:
            raise BadInput("TAG measured no step; train for at least one step (affinity.tag_every and train.epochs)")
        return (self.total / self.count).cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {"total": None if self.total is None else self.total.detach().cpu(), "count": self.count,
                "every": self.every}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = state

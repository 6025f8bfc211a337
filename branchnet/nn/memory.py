"""How much memory a network's forward pass needs, estimated before anything is allocated: the
network runs on torch's meta device (shapes, no data), and the sizes of its layers' outputs are
read off. :func:`branchnet.machine.check_memory` compares the estimate with what is free."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def forward_bytes(net: nn.Module, batch: int, size: Sequence[int]) -> int:
    """Bytes a forward pass of ``net`` (no gradients) on ``batch`` images of ``size`` (H, W) needs
    beyond its weights: the input and twice the largest tensor one layer makes (a layer's input and
    output are alive together). A lower bound of the peak, so that only what cannot fit whatever
    the allocator does is refused. The network is left as it was (its weights are swapped for
    meta tensors for the call only)."""
    from torch.func import functional_call

    state = {name: torch.empty_like(value, device="meta")
             for name, value in [*net.named_parameters(), *net.named_buffers()]}
    largest = 0

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal largest
        outputs = output.values() if isinstance(output, dict) else output if isinstance(output, (list, tuple)) \
            else (output,)
        for tensor in outputs:
            if isinstance(tensor, torch.Tensor):
                largest = max(largest, tensor.numel() * tensor.element_size())

    hooks = [m.register_forward_hook(record) for m in net.modules() if not list(m.children())]
    image = torch.empty(int(batch), 3, int(size[0]), int(size[1]), device="meta")
    try:
        with torch.no_grad():
            functional_call(net, state, (image,))
    finally:
        for hook in hooks:
            hook.remove()
    return image.numel() * image.element_size() + 2 * largest


def parameter_bytes(net: nn.Module) -> int:
    """Bytes of ``net``'s parameters and buffers (on any device, meta included)."""
    return sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])

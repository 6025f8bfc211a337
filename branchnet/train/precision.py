"""Mixed precision on CUDA: bfloat16 where the GPU supports it (no scaler), else float16 with a
gradient scaler; full precision on the CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Precision:
    """How the forward pass runs: ``enabled`` autocast to ``dtype``, with ``scaler`` for float16."""

    enabled: bool
    dtype: torch.dtype = torch.float32
    scaler: Any = None

    @classmethod
    def for_device(cls, device: torch.device, amp: bool) -> "Precision":
        if device.type != "cuda" or not amp:
            return cls(False)
        if torch.cuda.is_bf16_supported():
            return cls(True, torch.bfloat16)
        return cls(True, torch.float16, torch.amp.GradScaler("cuda"))

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)

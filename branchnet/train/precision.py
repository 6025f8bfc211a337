"""Mixed precision on CUDA: bfloat16 where the GPU supports it (no scaler), else float16 with a
gradient scaler; full precision on the CPU. ``train.amp`` may also name the type."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from branchnet.errors import BadInput


@dataclass
class Precision:
    """How the forward pass runs: ``enabled`` autocast to ``dtype``, with ``scaler`` for float16."""

    enabled: bool
    dtype: torch.dtype = torch.float32
    scaler: Any = None

    @classmethod
    def for_device(cls, device: torch.device, amp: bool | str) -> "Precision":
        """``amp`` true (bfloat16 where supported, else float16), false, ``"bfloat16"`` or
        ``"float16"``; full precision whatever ``amp`` off CUDA."""
        if device.type != "cuda" or amp is False:
            return cls(False)
        bf16 = torch.cuda.is_bf16_supported()
        if amp == "bfloat16" and not bf16:
            raise BadInput("train.amp is bfloat16 but this GPU does not support it; use train.amp=float16 or true")
        if amp == "bfloat16" or (amp is True and bf16):
            return cls(True, torch.bfloat16)
        return cls(True, torch.float16, torch.amp.GradScaler("cuda"))

    @property
    def name(self) -> str:
        """``float32``, ``bfloat16`` or ``float16`` (what the forward pass computes in)."""
        return str(self.dtype).replace("torch.", "") if self.enabled else "float32"

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)

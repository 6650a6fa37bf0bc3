"""Gated activation of the fused gate/up projection."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tritium.kernels import use_triton


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, 2 * I] = [gate | up] -> [T, I]
        if use_triton(x):
            from tritium.kernels.silu_mul import silu_and_mul

            return silu_and_mul(x)
        return self.forward_native(x)

    @staticmethod
    def forward_native(x: torch.Tensor) -> torch.Tensor:
        """The torch ops (CPU path, and the reference the GPU kernel is tested against)."""
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up

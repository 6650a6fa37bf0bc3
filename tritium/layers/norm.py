"""RMSNorm as Hugging Face computes it: statistics in float32, scaled in the input dtype."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from tritium.kernels import use_triton
from tritium.layers.linear import check_shape


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6, prefix: str = "norm",
                 params_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=params_dtype or torch.get_default_dtype()),
                                   requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        self.weight.tritium_name = f"{prefix}.weight"
        # float32 0-dim operands: half the cost of Python scalars in these tiny ops, same values.
        self.register_buffer("eps_t", torch.tensor(eps, dtype=torch.float32), persistent=False)
        self.register_buffer("size_t", torch.tensor(float(hidden_size), dtype=torch.float32), persistent=False)

    @staticmethod
    def weight_loader(param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
        check_shape(param.tritium_name, param.shape, loaded_weight)  # replicated on every rank
        param.data.copy_(loaded_weight)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        mean_sq = (xf * xf).sum(-1, keepdim=True).div_(self.size_t)  # bit-exact .pow(2).mean(-1)
        xf = xf * torch.rsqrt(mean_sq.add_(self.eps_t))
        return self.weight * xf.to(x.dtype)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        """x: [..., hidden]. With `residual`, first adds it (in x's dtype, like HF) and returns
        (normed, new_residual); without, returns normed. On a GPU one fused kernel does it all
        (and updates `residual` in place)."""
        if use_triton(x):
            from tritium.kernels.rmsnorm import rms_norm

            out = rms_norm(x, self.weight, self.eps, residual)
            return out if residual is None else (out, residual)
        return self.forward_native(x, residual)

    def forward_native(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        """The torch ops (CPU path, and the reference the GPU kernel is tested against)."""
        if residual is None:
            return self._norm(x)
        residual = x + residual
        return self._norm(residual), residual

"""RMSNorm, optionally fused with the residual add before it: one launch instead of ~8 ops.

Rounds like Hugging Face: the residual sum is rounded to the input dtype, the statistics are
float32, the normalised row is rounded to the input dtype before the weight multiplies it.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from tritium.kernels import next_pow2
from tritium.kernels.pdl import launch_options, let_next_kernel_launch, wait_for_previous_kernel


@triton.jit
def _rmsnorm_kernel(x_ptr, residual_ptr, weight_ptr, out_ptr, stride_x, stride_r, stride_o, eps,
                    N: tl.constexpr, BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous_kernel(USE_PDL)
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = (x.to(tl.float32) + tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32))
        x = x.to(out_ptr.dtype.element_ty)
        tl.store(residual_ptr + row * stride_r + cols, x, mask=mask)  # the new residual, in place
    let_next_kernel_launch(USE_PDL)
    xf = x.to(tl.float32)
    inv_rms = 1.0 / tl.sqrt(tl.sum(xf * xf, 0) / N + eps)
    normed = (xf * inv_rms).to(out_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (w * normed).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x: [..., N] -> RMSNorm(x) * weight. With `residual` ([..., N], contiguous rows), first
    residual += x (in place, rounded to x's dtype), and the norm is of that sum."""
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    assert x2.stride(-1) == 1 and weight.shape == (n,)
    out = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    r2 = residual.view(-1, n) if residual is not None else x2
    if x2.shape[0]:
        _rmsnorm_kernel[(x2.shape[0],)](x2, r2, weight, out, x2.stride(0), r2.stride(0), out.stride(0), eps,
                                        N=n, BLOCK=next_pow2(n), HAS_RESIDUAL=residual is not None,
                                        num_warps=4 if n <= 4096 else 8, **launch_options(x.device, x2.shape[0]))
    return out.view(x.shape)

"""SiLU(gate) * up over the fused [gate | up] projection output, in one launch.

Rounds like F.silu(gate) * up in the input dtype: silu rounded first, then the product.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritium.kernels.pdl import launch_options, let_next_kernel_launch, wait_for_previous_kernel


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, stride_x, stride_o, N: tl.constexpr, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous_kernel(USE_PDL)
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + N + cols, mask=mask, other=0.0).to(tl.float32)
    let_next_kernel_launch(USE_PDL)
    act = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [T, 2 * I] = [gate | up] -> [T, I]."""
    t, two_n = x.shape
    n = two_n // 2
    assert x.stride(1) == 1
    out = torch.empty((t, n), dtype=x.dtype, device=x.device)
    block = 1024
    if t:
        _silu_mul_kernel[(t, triton.cdiv(n, block))](x, out, x.stride(0), out.stride(0), N=n, BLOCK=block,
                                                      num_warps=4, **launch_options(x.device, t))
    return out

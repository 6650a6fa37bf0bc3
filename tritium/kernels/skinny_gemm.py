"""y = x W^T for a few rows of x (decode at small batch): a weight-streaming kernel.

At 1-16 rows a linear layer only has to read its weight once at full memory bandwidth. Grid
(cdiv(N, BLOCK_N),): a program streams BLOCK_N rows of W ([N, K], K contiguous) in BLOCK_K
slices and multiplies them with all of x's rows at once (padded to a 16-row tensor-core tile;
the padding costs no memory traffic), accumulating in float32.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from tritium.kernels import dot_precision, interpreting

MAX_ROWS = 16


@triton.jit
def _skinny_gemm_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr):
    n0 = tl.program_id(0) * BLOCK_N
    rows = tl.arange(0, BLOCK_M)
    cols = n0 + tl.arange(0, BLOCK_N)
    r_mask = rows < M
    c_mask = cols < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        w = tl.load(w_ptr + cols[:, None] * stride_wn + ks[None, :], mask=c_mask[:, None] & k_mask[None, :],
                    other=0.0)  # [BLOCK_N, BLOCK_K]
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=r_mask[:, None] & k_mask[None, :],
                    other=0.0)  # [BLOCK_M, BLOCK_K]
        if DOT_F32:
            w = w.to(tl.float32)
            x = x.to(tl.float32)
        acc += tl.dot(x, tl.trans(w), input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=r_mask[:, None] & c_mask[None, :])


def skinny_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                block_n: int = 16, block_k: int = 512, num_warps: int = 4, num_stages: int = 4) -> torch.Tensor:
    """x: [M, K] with M <= 16; weight: [N, K] (K contiguous) -> [M, N] in x's dtype."""
    m, k = x.shape
    n = weight.shape[0]
    assert m <= MAX_ROWS and weight.shape[1] == k and weight.stride(1) == 1 and x.stride(1) == 1
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    _skinny_gemm_kernel[(triton.cdiv(n, block_n),)](
        x, weight, bias if bias is not None else weight, y, m, n, k, x.stride(0), weight.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k,
        DOT_F32=interpreting(), PRECISION=dot_precision(x.dtype), num_warps=num_warps, num_stages=num_stages)
    return y

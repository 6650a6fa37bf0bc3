"""y = x W^T with W stored as int8 (per-channel scale) or int4 (per-group scale and zero): the
weight-only (W8A16 / W4A16) GEMMs for decode-sized batches.

The skinny_gemm design (stream the weight once, multiply it with every row of x at once, float32
accumulation), reading the quantized bytes only: a program owns BLOCK_N output channels and one
16-row tile of x (grid (cdiv(N, BLOCK_N), cdiv(M, BLOCK_M))), loads BLOCK_N weight rows per step,
dequantizes them in registers and feeds tl.dot. Large batches (prefill) dequantize the weight once
and use cuBLAS instead (quantization/weight_only.py decides).

Layouts (quantization/quant_utils.py): int8 weight [N, K] + float32 scale [N] (applied to the
accumulator: it is constant along K); int4 weight_packed uint8 [N, Kp/2], scale and zero [N, Kp/G]:
each group of G inputs is G/2 bytes, low nibbles = the group's first half, high nibbles = its
second half, so each nibble plane meets a contiguous slice of x.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from tritium.kernels import dot_precision, interpreting

BLOCK_M = 16


@triton.jit
def _w8a16_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                  HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  DOT_F32: tl.constexpr, PRECISION: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    r_mask = rows < M
    c_mask = cols < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        w = tl.load(w_ptr + cols[:, None] * stride_wn + ks[None, :], mask=c_mask[:, None] & k_mask[None, :],
                    other=0)  # [BLOCK_N, BLOCK_K] int8
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=r_mask[:, None] & k_mask[None, :],
                    other=0.0)  # [BLOCK_M, BLOCK_K]
        if DOT_F32:
            x = x.to(tl.float32)
        acc += tl.dot(x, tl.trans(w.to(x.dtype)), input_precision=PRECISION)  # int8 is exact in bf16
    acc *= tl.load(scale_ptr + cols, mask=c_mask, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=r_mask[:, None] & c_mask[None, :])


@triton.jit
def _w4a16_kernel(x_ptr, wq_ptr, scale_ptr, zero_ptr, bias_ptr, y_ptr, M, N, K, NUM_GROUPS,
                  stride_xm, stride_wn, stride_sn, stride_ym,
                  GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  DOT_F32: tl.constexpr, PRECISION: tl.constexpr):
    HALF: tl.constexpr = GROUP // 2
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    r_mask = rows < M
    c_mask = cols < N
    j = tl.arange(0, HALF)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for g in range(0, NUM_GROUPS):
        packed = tl.load(wq_ptr + cols[:, None] * stride_wn + g * HALF + j[None, :], mask=c_mask[:, None],
                         other=0).to(tl.int32)  # [BLOCK_N, HALF]
        scale = tl.load(scale_ptr + cols * stride_sn + g, mask=c_mask, other=0.0).to(tl.float32)[:, None]
        zero = tl.load(zero_ptr + cols * stride_sn + g, mask=c_mask, other=0).to(tl.int32)[:, None]
        w_lo = ((packed & 0xF) - zero).to(tl.float32) * scale  # inputs g*G + j
        w_hi = ((packed >> 4) - zero).to(tl.float32) * scale  # inputs g*G + HALF + j
        k_lo = g * GROUP + j
        x_lo = tl.load(x_ptr + rows[:, None] * stride_xm + k_lo[None, :],
                       mask=r_mask[:, None] & (k_lo < K)[None, :], other=0.0)  # [BLOCK_M, HALF]
        x_hi = tl.load(x_ptr + rows[:, None] * stride_xm + (k_lo + HALF)[None, :],
                       mask=r_mask[:, None] & (k_lo + HALF < K)[None, :], other=0.0)
        if DOT_F32:
            x_lo = x_lo.to(tl.float32)
            x_hi = x_hi.to(tl.float32)
        acc += tl.dot(x_lo, tl.trans(w_lo.to(x_lo.dtype)), input_precision=PRECISION)
        acc += tl.dot(x_hi, tl.trans(w_hi.to(x_hi.dtype)), input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=r_mask[:, None] & c_mask[None, :])


def _check_x(x: torch.Tensor, k: int) -> None:
    assert x.dim() == 2 and x.shape[1] == k and x.stride(1) == 1, (tuple(x.shape), x.stride(), k)


def w8a16_gemm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor] = None,
               block_n: int = 16, block_k: int = 256, num_warps: int = 4, num_stages: int = 3) -> torch.Tensor:
    """x [M, K] (float) @ (weight int8 [N, K] * scale float32 [N, None])^T (+ bias [N]) -> [M, N] in x's dtype."""
    n, k = weight.shape
    _check_x(x, k)
    assert weight.dtype == torch.int8 and weight.stride(1) == 1 and scale.shape == (n,) and scale.is_contiguous()
    m = x.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, BLOCK_M))
    _w8a16_kernel[grid](x, weight, scale, bias if bias is not None else scale, y, m, n, k,
                        x.stride(0), weight.stride(0), y.stride(0),
                        HAS_BIAS=bias is not None, BLOCK_M=BLOCK_M, BLOCK_N=block_n, BLOCK_K=block_k,
                        DOT_F32=interpreting(), PRECISION=dot_precision(x.dtype),
                        num_warps=num_warps, num_stages=num_stages)
    return y


def w4a16_gemm(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
               bias: Optional[torch.Tensor] = None, block_n: int = 16, num_warps: int = 4,
               num_stages: int = 3) -> torch.Tensor:
    """x [M, K] @ dequant(packed uint8 [N, Kp/2], scale [N, Kp/G], zero uint8 [N, Kp/G])^T (+ bias)
    -> [M, N] in x's dtype; K <= Kp (the padded inputs multiply zeros)."""
    n, half_kp = packed.shape
    m, k = x.shape
    num_groups = 2 * half_kp // group_size
    assert group_size % 32 == 0 and num_groups * group_size == 2 * half_kp and k <= 2 * half_kp
    assert packed.dtype == torch.uint8 and zero.dtype == torch.uint8 and scale.shape == zero.shape == (n, num_groups)
    assert packed.stride(1) == 1 and scale.stride(1) == zero.stride(1) == 1 and scale.stride(0) == zero.stride(0)
    _check_x(x, k)
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, BLOCK_M))
    _w4a16_kernel[grid](x, packed, scale, zero, bias if bias is not None else scale, y, m, n, k, num_groups,
                        x.stride(0), packed.stride(0), scale.stride(0), y.stride(0),
                        GROUP=group_size, HAS_BIAS=bias is not None, BLOCK_M=BLOCK_M, BLOCK_N=block_n,
                        DOT_F32=interpreting(), PRECISION=dot_precision(x.dtype),
                        num_warps=num_warps, num_stages=num_stages)
    return y

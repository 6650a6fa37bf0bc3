"""Weight-only layers' dense weights for large batches, in one pass: int4 groups (W4A16 / AWQ /
GPTQ) or int8 rows (W8A16) to the model dtype, which cuBLAS then multiplies.

The torch references (quant_utils.dequantize_int4; int8 .to() then * scale) take five to seven
elementwise passes through float32 or uint8 temporaries: on an H200 a 128-token W4A16 prefill of
an 8B model took 85 ms against bf16's 5 ms (BENCHMARKS.md, 2026-11-30), most of it in those
passes. One pass reads the quantized bytes once and writes the dense weight once.
Same arithmetic as the references (float32 (q - zero) * scale, rounded once), so the values
are equal bit for bit.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritium.kernels.streaming_gemm import _nibbles

_ELEMENTS = 4096  # weights a program writes


@triton.jit
def _int4_kernel(packed_ptr, scale_ptr, zero_ptr, out_ptr, K, num_groups, stride_pn, stride_sn, stride_on,
                 HALF: tl.constexpr, GROUPS: tl.constexpr):
    """One weight row n, GROUPS groups of 2 * HALF weights: byte j of a group holds weight j (low
    nibble) and weight j + HALF (high nibble) (quant_utils.pack_int4's layout)."""
    n = tl.program_id(0)
    g = tl.program_id(1) * GROUPS + tl.arange(0, GROUPS)  # [GROUPS] group indices
    j = tl.arange(0, HALF)  # [HALF]
    g_ok = g < num_groups
    byte = tl.load(packed_ptr + n * stride_pn + g[:, None] * HALF + j[None, :], mask=g_ok[:, None], other=0)
    scale = tl.load(scale_ptr + n * stride_sn + g, mask=g_ok, other=0.0).to(tl.float32)[:, None]  # [GROUPS, 1]
    zero = tl.load(zero_ptr + n * stride_sn + g, mask=g_ok, other=0).to(tl.float32)[:, None]
    lo, hi = _nibbles(byte.to(tl.int32), zero, False)  # [GROUPS, HALF]: q - zero, exactly
    lo, hi = lo * scale, hi * scale
    k_lo = g[:, None] * (2 * HALF) + j[None, :]  # weights past K are the zero padding of the last group
    out = out_ptr + n * stride_on
    tl.store(out + k_lo, lo.to(out_ptr.dtype.element_ty), mask=g_ok[:, None] & (k_lo < K))
    tl.store(out + k_lo + HALF, hi.to(out_ptr.dtype.element_ty), mask=g_ok[:, None] & (k_lo + HALF < K))


@triton.jit
def _int8_kernel(q_ptr, scale_ptr, out_ptr, K, stride_qn, stride_on, BLOCK: tl.constexpr):
    n = tl.program_id(0)
    ks = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = ks < K
    q = tl.load(q_ptr + n * stride_qn + ks, mask=mask, other=0).to(tl.float32)
    # the reference multiplies in the model dtype: the scale is rounded to it first
    scale = tl.load(scale_ptr + n).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + n * stride_on + ks, (q * scale).to(out_ptr.dtype.element_ty), mask=mask)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int, k: int,
                    dtype: torch.dtype) -> torch.Tensor:
    """packed uint8 [N, Kp/2], scale [N, Kp/G], zero uint8 [N, Kp/G] -> [N, k] in dtype."""
    n, num_groups = scale.shape
    if group_size % 2 or group_size & (group_size - 1):
        raise ValueError(f"int4 dequantization needs a power-of-two group size, got {group_size}")
    out = torch.empty(n, k, dtype=dtype, device=packed.device)
    groups = max(1, min(_ELEMENTS // group_size, triton.next_power_of_2(num_groups)))
    grid = (n, triton.cdiv(num_groups, groups))
    _int4_kernel[grid](packed, scale, zero, out, k, num_groups, packed.stride(0), scale.stride(0), out.stride(0),
                       HALF=group_size // 2, GROUPS=groups)
    return out


def dequantize_int8_rows(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """weight int8 [N, K], scale float32 [N] -> weight * scale [N, K] in dtype (multiplied in dtype,
    as `weight.to(dtype) * scale.to(dtype)[:, None]`)."""
    n, k = weight.shape
    out = torch.empty(n, k, dtype=dtype, device=weight.device)
    block = min(_ELEMENTS, triton.next_power_of_2(k))
    _int8_kernel[(n, triton.cdiv(k, block))](weight, scale, out, k, weight.stride(0), out.stride(0), BLOCK=block)
    return out

"""Activation quantization for the tensor-core GEMMs (`_scaled_mm`, `_int_mm`), one pass over x:
x [M, K] / scale rounded onto FP8 e4m3 (saturating at +-448) or int8 (half away from zero, clamped
to +-127), with one scale for the tensor or one per row (row_scales: each row's amax / qmax).

The references, quant_utils.quantize_fp8 / quantize_int8, take four float32 passes in torch
(upcast, divide, clamp, cast): ~23 bytes of traffic per element where this reads 2 and writes 1.
By that arithmetic an 8192-token FP8 step of an 8B model moved ~160 GB for it, tens of ms of the
~180 ms step measured on an H200 (BENCHMARKS.md; the split was not profiled).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritium.kernels import interpreting
from tritium.kernels.rope_kv_write import _quantize

_BLOCK = 1024
_QUANT = {torch.float8_e4m3fn: 1, torch.int8: 2}  # _quantize's modes


@triton.jit
def _row_scale_kernel(x_ptr, out_ptr, K, stride_xm, QMAX: tl.constexpr, BLOCK: tl.constexpr):
    """out[m] = max(amax |x[m, :]| / QMAX, 1e-12) (quant_utils.fp8_scale for QMAX 448)."""
    row = tl.program_id(0)
    amax = tl.zeros([BLOCK], tl.float32)
    for k0 in range(0, K, BLOCK):
        ks = k0 + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * stride_xm + ks, mask=ks < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    # IEEE division (Triton's `/` is approximate), before the max (rounding is monotonic, so the
    # result is the same): the scale torch computes, bit for bit
    scaled = tl.math.div_rn(amax, tl.full([BLOCK], QMAX, tl.float32))
    tl.store(out_ptr + row, tl.maximum(tl.max(scaled, axis=0), 1e-12))


@triton.jit
def _quant_rows_kernel(x_ptr, scale_ptr, out_ptr, K, stride_xm, stride_om, PER_ROW: tl.constexpr,
                       QUANT: tl.constexpr, BLOCK: tl.constexpr, ROUND_FP8: tl.constexpr):
    row = tl.program_id(0)
    ks = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = ks < K
    if PER_ROW:
        scale = tl.load(scale_ptr + row)
    else:
        scale = tl.load(scale_ptr)
    x = tl.load(x_ptr + row * stride_xm + ks, mask=mask, other=0.0)
    y = _quantize(x, scale, QUANT, out_ptr.dtype.element_ty, ROUND_FP8)
    tl.store(out_ptr + row * stride_om + ks, y, mask=mask)


def row_scales(x: torch.Tensor, qmax: float) -> torch.Tensor:
    """x [M, K] -> float32 [M]: each row's scale, max(amax / qmax, 1e-12)."""
    m, k = x.shape
    out = torch.empty(m, dtype=torch.float32, device=x.device)
    block = min(triton.next_power_of_2(k), 16384)  # one pass over a row for every Llama width
    _row_scale_kernel[(m,)](x, out, k, x.stride(0), QMAX=qmax, BLOCK=block, num_warps=8 if block > 4096 else 4)
    return out


def row_fp8_scales(x: torch.Tensor) -> torch.Tensor:
    """x [M, K] -> float32 [M]: each row's FP8 scale (per-token activations)."""
    return row_scales(x, 448.0)


def quantize_rows(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x [M, K] (K contiguous) / scale -> dtype (float8_e4m3fn or int8) [M, K]; scale float32: one
    value ([1] or []) for the whole tensor, or one per row ([M] or [M, 1])."""
    m, k = x.shape
    assert x.stride(1) == 1 and scale.dtype == torch.float32 and scale.numel() in (1, m), (x.stride(), scale.shape)
    out = torch.empty((m, k), dtype=dtype, device=x.device)
    per_row = scale.numel() == m and m > 1
    _quant_rows_kernel[(m, triton.cdiv(k, _BLOCK))](x, scale, out, k, x.stride(0), out.stride(0), PER_ROW=per_row,
                                                    QUANT=_QUANT[dtype], BLOCK=_BLOCK, ROUND_FP8=interpreting(),
                                                    num_warps=4)
    return out

"""FP8 activation quantization for `_scaled_mm` in one pass: x [M, K] / scale rounded onto
float8_e4m3fn, saturating at +-448 (quant_utils.quantize_fp8, which takes four float32 passes
in torch: upcast, divide, clamp, cast; at an 8192-token step that is ~3 GB of memory traffic for
one down projection's input alone).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritium.kernels import interpreting
from tritium.kernels.rope_kv_write import _quantize

_BLOCK = 1024


@triton.jit
def _fp8_quant_kernel(x_ptr, scale_ptr, out_ptr, K, stride_xm, stride_om, PER_ROW: tl.constexpr,
                      BLOCK: tl.constexpr, ROUND_FP8: tl.constexpr):
    row = tl.program_id(0)
    ks = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = ks < K
    if PER_ROW:
        scale = tl.load(scale_ptr + row)
    else:
        scale = tl.load(scale_ptr)
    x = tl.load(x_ptr + row * stride_xm + ks, mask=mask, other=0.0)
    tl.store(out_ptr + row * stride_om + ks, _quantize(x, scale, 1, tl.float8e4nv, ROUND_FP8), mask=mask)


def quantize_fp8_rows(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [M, K] (K contiguous) / scale -> float8_e4m3fn [M, K]; scale float32: one value ([1] or
    []) for the whole tensor, or one per row ([M] or [M, 1])."""
    m, k = x.shape
    assert x.stride(1) == 1 and scale.dtype == torch.float32 and scale.numel() in (1, m), (x.stride(), scale.shape)
    out = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    per_row = scale.numel() == m and m > 1
    _fp8_quant_kernel[(m, triton.cdiv(k, _BLOCK))](x, scale, out, k, x.stride(0), out.stride(0), PER_ROW=per_row,
                                                   BLOCK=_BLOCK, ROUND_FP8=interpreting(), num_warps=4)
    return out

"""FP8 (e4m3) and INT8 KV caches: one float32 scale per KV head of each layer, for k and for v.

The cache tensor of a layer is [2, blocks, block_size, kv_heads, head_dim] in float8_e4m3fn or
int8 (half the bytes of bfloat16: twice the tokens in the same memory); the layer's `kv_scale`
[2, kv_heads] holds the dequant multipliers (k at 0, v at 1). Writers store round(x / scale)
(saturated); readers multiply by the scale. Scales come from calibration (amax of the rotated k /
v of each head over the calibration text, mapped onto the format's largest value) or from a
checkpoint (ModelOpt's per-layer k_scale / v_scale); without either they are 1.0.
"""
from __future__ import annotations

import torch

from tritium.quantization.quant_utils import FP8_DTYPE, FP8_MAX, INT8_MAX, round_half_away

KV_QUANT_DTYPES = (FP8_DTYPE, torch.int8)


def is_quantized_kv(dtype: torch.dtype) -> bool:
    return dtype in KV_QUANT_DTYPES


def kv_format_max(dtype: torch.dtype) -> float:
    """The largest magnitude a quantized cache dtype holds."""
    return FP8_MAX if dtype == FP8_DTYPE else INT8_MAX


def kv_scale_from_amax(amax: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[2, kv_heads] amax of k and v -> dequant multipliers for cache dtype `dtype`."""
    return (amax.float() / kv_format_max(dtype)).clamp(min=1e-8)


def quantize_kv(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x / scale (scale broadcasts against x) saturated and rounded into the cache dtype."""
    limit = kv_format_max(dtype)
    y = (x.float() / scale).clamp(-limit, limit)
    return y.to(dtype) if dtype == FP8_DTYPE else round_half_away(y).to(dtype)


def dequantize_kv(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cache values times their scale (broadcast), in `dtype`."""
    return (x.float() * scale).to(dtype)

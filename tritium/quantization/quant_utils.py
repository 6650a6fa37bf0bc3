"""Quantize / dequantize primitives shared by the linear methods, calibration and checkpoint loaders.

Layouts tritium keeps (the saved-engine format; checkpoint formats are converted to them):
  FP8     weight float8_e4m3fn [N, K], weight_scale float32 [N] (dequant multipliers: w = q * s)
  INT8    weight int8 [N, K] (symmetric, -127..127), weight_scale float32 [N]
  INT4    weight_packed uint8 [N, Kp / 2], weight_scale [N, Kp / G], weight_zero uint8 [N, Kp / G]
          w = (q - zero) * scale, q and zero in 0..15 (asymmetric, AWQ's convention). K is padded
          with zeros to Kp, a multiple of the group size G. Within each group of G input channels,
          byte j holds channel j in its low nibble and channel j + G/2 in its high nibble, so a
          kernel multiplies each nibble plane with a contiguous half of the group's inputs.
"""
from __future__ import annotations

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
INT8_MAX = 127.0
INT4_MAX = 15


def fp8_scale(amax: torch.Tensor) -> torch.Tensor:
    """Dequant multiplier mapping amax onto FP8's largest value (float32)."""
    return (amax.float() / FP8_MAX).clamp(min=1e-12)


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale rounded to float8_e4m3fn, saturating at +-448 (scale broadcasts against x)."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def quantize_fp8_per_row(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (fp8 [N, K], scale float32 [N]) with one scale per row."""
    scale = fp8_scale(w.abs().amax(dim=1))  # [N]
    return quantize_fp8(w, scale[:, None]), scale


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties away from zero (what the Triton kernels compute)."""
    return torch.where(x >= 0, torch.floor(x + 0.5), torch.ceil(x - 0.5))


def quantize_int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """round(x / scale) clamped to -127..127, int8 (scale broadcasts against x)."""
    return round_half_away(x.float() / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)


def quantize_int8_per_row(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (int8 [N, K], scale float32 [N]), symmetric per row."""
    scale = (w.abs().amax(dim=1).float() / INT8_MAX).clamp(min=1e-12)  # [N]
    return quantize_int8(w, scale[:, None]), scale


def padded_k(k: int, group_size: int) -> int:
    return -(-k // group_size) * group_size


# Range divisors tried per group: a group's [min, max] spans j of the 15 int4 steps (j < 15 leaves
# room for the integer zero point's rounding). Weights already on a 4-bit grid (a Q4_1 GGUF's
# blocks) fit exactly when j is their own step count; for any weights it is a cheap error search.
RANGE_STEPS = tuple(range(INT4_MAX, 7, -1))


def _int4_params_for(lo: torch.Tensor, hi: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    scale = ((hi - lo) / steps).clamp(min=1e-8)
    return scale, torch.round(-lo / scale).clamp(0, INT4_MAX)


def int4_group_params(w: torch.Tensor, group_size: int,
                      range_steps: tuple[int, ...] = RANGE_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric per-group scale and zero of w [N, K] (K a multiple of group_size): float32
    scale [N, K/G] and zero [N, K/G] (integers 0..15 as floats), for the range among range_steps
    whose rounding error is smallest. The zero point is an integer, so a weight of 0 stays
    exactly 0 (a fractional zero point has lower mean squared error but shifts every small weight
    of a group the same way: SmolLM2's perplexity +88% instead of +14% at group 128)."""
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)  # [N, groups, G]
    hi, lo = g.amax(dim=-1).clamp(min=0), g.amin(dim=-1).clamp(max=0)  # [N, groups]; 0 inside the range
    best_scale = best_zero = best_err = None
    for steps in range_steps:
        scale, zero = _int4_params_for(lo, hi, steps)
        err = (fake_quantize_groups(g, scale, zero) - g).pow(2).sum(dim=-1)  # [N, groups]
        if best_err is None:
            best_scale, best_zero, best_err = scale, zero, err
        else:
            better = err < best_err
            best_scale = torch.where(better, scale, best_scale)
            best_zero = torch.where(better, zero, best_zero)
            best_err = torch.minimum(err, best_err)
    return best_scale, best_zero


def fake_quantize_groups(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """g [..., groups, G] rounded onto its groups' int4 grids (scale, zero [..., groups]) and back."""
    q = (torch.round(g / scale[..., None]) + zero[..., None]).clamp(0, INT4_MAX)
    return (q - zero[..., None]) * scale[..., None]


def pack_int4(q: torch.Tensor, group_size: int) -> torch.Tensor:
    """q [N, Kp] integers 0..15 -> uint8 [N, Kp / 2] in the half-split-per-group layout."""
    n, kp = q.shape
    g = q.to(torch.uint8).reshape(n, kp // group_size, 2, group_size // 2)  # [N, groups, halves, G/2]
    return (g[:, :, 0] | (g[:, :, 1] << 4)).reshape(n, kp // 2)


def unpack_int4(packed: torch.Tensor, group_size: int) -> torch.Tensor:
    """uint8 [N, Kp / 2] -> uint8 [N, Kp] values 0..15 (inverse of pack_int4)."""
    n, half_kp = packed.shape
    g = packed.reshape(n, -1, group_size // 2)  # [N, groups, G/2]
    return torch.stack((g & 0xF, g >> 4), dim=2).reshape(n, half_kp * 2)


def quantize_int4(w: torch.Tensor, group_size: int, scale_dtype: torch.dtype = torch.float32,
                  params: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [N, K] -> (packed uint8 [N, Kp/2], scale [N, Kp/G] in scale_dtype, zero uint8 [N, Kp/G]).
    K is zero-padded to Kp; the scale is rounded to scale_dtype before the weights are rounded,
    so dequantizing with the stored scale reproduces the rounding exactly. params: (scale, zero)
    [N, Kp/G] chosen already (by AWQ's clip search or GPTQ) instead of int4_group_params'."""
    n, k = w.shape
    kp = padded_k(k, group_size)
    wp = torch.nn.functional.pad(w.float(), (0, kp - k))  # [N, Kp]
    scale, zero = params if params is not None else int4_group_params(wp, group_size)
    scale = scale.to(scale_dtype).float()
    g = wp.reshape(n, -1, group_size)
    q = (torch.round(g / scale[..., None]) + zero[..., None]).clamp(0, INT4_MAX).reshape(n, kp)
    return pack_int4(q, group_size), scale.to(scale_dtype), zero.to(torch.uint8)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
                    k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The int4 layout back to a dense [N, K] weight in `dtype` (float32 arithmetic)."""
    n = packed.shape[0]
    q = unpack_int4(packed, group_size).reshape(n, -1, group_size).float()  # [N, groups, G]
    w = (q - zero.float()[..., None]) * scale.float()[..., None]
    return w.reshape(n, -1)[:, :k].to(dtype)

"""Rotary position embedding (neox / HF `rotate_half` layout) with a float32 cos/sin cache.

Frequencies follow transformers' `modeling_rope_utils` formulas exactly, so that q and k match
Hugging Face bit for bit in float32:
  default:  inv_freq_i = 1 / base^(2i / d)
  linear:   inv_freq / factor
  llama3:   long wavelengths (> original_max / low_freq_factor) divided by factor, short ones
            (< original_max / high_freq_factor) kept, the band between smoothly interpolated
  dynamic:  NTK: base' = base * (factor * L / max_pos - (factor - 1))^(d / (d - 2)), where L is
            the longest sequence in the call (HF uses max(position_ids) + 1); L <= max_pos
            leaves the frequencies untouched. Chosen on the device (no host sync).
Caveat for dynamic: like HF, the scaling follows the call's longest position, so keys cached by
an earlier, shorter call keep their old rotation; a batch shares one L (HF runs one sequence).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import torch
from torch import nn

SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "llama3")
MIN_CACHED_POSITIONS = 4096  # small-context configs (tiny test models) may still run longer sequences, as in HF


def default_inv_freq(head_dim: int, base: float) -> torch.Tensor:
    # [head_dim / 2] float32
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def llama3_inv_freq(head_dim: int, base: float, scaling: dict[str, Any]) -> torch.Tensor:
    inv_freq = default_inv_freq(head_dim, base)
    factor = scaling["factor"]
    low_freq_factor, high_freq_factor = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


class RopeTables(NamedTuple):
    cos: Optional[torch.Tensor]  # [T, 1, head_dim] in the model dtype: [cos | cos]
    sin: Optional[torch.Tensor]  # [T, 1, head_dim]: [-sin | sin]
    cos_sin: Optional[torch.Tensor]  # [T, head_dim] float32: [cos | sin], for fused kernels


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [T, heads, head_dim]; cos = [cos | cos], sin = [-sin | sin]: [T, 1, head_dim] in x's dtype.
    # x.roll(d/2) = [x2 | x1], so this is HF's x * cos + rotate_half(x) * sin with the same
    # products and sums in the same order (bit-exact), in 4 ops instead of 9.
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


class RotaryEmbedding(nn.Module):
    """Rotates q and k by their positions. `cos_sin_cache`: [max(max_position, 4096), head_dim]
    float32, cos in the first half of the last dim, sin in the second."""

    def __init__(self, head_dim: int, max_position: int, base: float, inv_freq: torch.Tensor):
        super().__init__()
        self.head_dim, self.max_position, self.base = head_dim, max_position, base
        inv_freq = inv_freq.float()
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        cached = torch.arange(max(max_position, MIN_CACHED_POSITIONS))
        self.register_buffer("cos_sin_cache", self._cos_sin(cached, inv_freq), persistent=False)

    @staticmethod
    def _cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
        freqs = positions.float()[:, None] * inv_freq[None, :]  # [T, head_dim / 2]
        return torch.cat((freqs.cos(), freqs.sin()), dim=-1)  # [T, head_dim]

    def cos_sin(self, positions: torch.Tensor) -> torch.Tensor:
        return self.cos_sin_cache.index_select(0, positions)  # [T, head_dim]

    def prepare(self, positions: torch.Tensor, dtype: torch.dtype, fused: bool = False) -> RopeTables:
        """The step's rotation tables, computed once per forward pass and shared by every layer:
        for apply_rotary, (cos, sin) each [T, 1, head_dim] in `dtype`; with `fused` (the attention
        backend rotates while writing its cache) only the float32 rows cos_sin [T, head_dim]."""
        rows = self.cos_sin(positions)  # [T, head_dim] float32
        if fused:
            return RopeTables(None, None, rows)
        cos, sin = rows.unsqueeze(1).chunk(2, dim=-1)  # each [T, 1, head_dim / 2]
        return RopeTables(torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype), None)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [T]; q: [T, num_heads * head_dim] or [T, num_heads, head_dim]; k likewise.
        cos, sin, _ = self.prepare(positions, q.dtype)
        t = positions.shape[0]
        q_rot = apply_rotary(q.view(t, -1, self.head_dim), cos, sin)
        k_rot = apply_rotary(k.view(t, -1, self.head_dim), cos, sin)
        return q_rot.view(q.shape), k_rot.view(k.shape)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_position={self.max_position}, base={self.base}"


class DynamicNTKRotaryEmbedding(RotaryEmbedding):
    """NTK-aware scaling whose base grows with the call's longest position (see module doc)."""

    def __init__(self, head_dim: int, max_position: int, base: float, factor: float):
        self.factor = factor
        super().__init__(head_dim, max_position, base, default_inv_freq(head_dim, base))

    def cos_sin(self, positions: torch.Tensor) -> torch.Tensor:
        d, m = self.head_dim, self.max_position
        seq_len = torch.clamp(positions.max() + 1, min=m)  # 0-dim, stays on the device
        base = self.base * ((self.factor * seq_len / m) - (self.factor - 1)) ** (d / (d - 2))
        scaled = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64, device=positions.device).float() / d))
        inv_freq = torch.where(seq_len > m, scaled, self.inv_freq)  # [head_dim / 2]
        return self._cos_sin(positions, inv_freq)


def get_rope(head_dim: int, max_position: int, base: float,
             rope_scaling: Optional[dict[str, Any]] = None) -> RotaryEmbedding:
    """Build the rotary embedding for ModelConfig's (rope_theta, rope_scaling)."""
    scaling = dict(rope_scaling or {})
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    if rope_type != "default" and "factor" not in scaling:
        raise ValueError(f"rope_scaling of type {rope_type!r} needs a 'factor', got {scaling}")
    if rope_type == "dynamic":
        return DynamicNTKRotaryEmbedding(head_dim, max_position, base, float(scaling["factor"]))
    if rope_type == "linear":
        inv_freq = default_inv_freq(head_dim, base) / scaling["factor"]
    elif rope_type == "llama3":
        missing = [k for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                   if k not in scaling]
        if missing:
            raise ValueError(f"llama3 rope_scaling lacks {', '.join(missing)}: {scaling}")
        inv_freq = llama3_inv_freq(head_dim, base, scaling)
    else:
        inv_freq = default_inv_freq(head_dim, base)
    return RotaryEmbedding(head_dim, max_position, base, inv_freq)

"""The attention layer models use: hands q/k/v to the step's backend with this layer's cache."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from tritium.attention.backend import get_forward_context


class Attention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, layer_idx: int,
                 kv_cache_dtype: Optional[torch.dtype] = None):
        """kv_cache_dtype: float8_e4m3fn / int8 for a quantized KV cache (None: the model dtype);
        its scales (dequant multipliers, [2, num_kv_heads] float32: k then v) are the buffer
        `kv_scale`, set by calibration or the checkpoint."""
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.layer_idx = layer_idx
        self.scale = head_dim ** -0.5
        self.kv_cache_dtype = kv_cache_dtype
        if kv_cache_dtype is not None:
            self.register_buffer("kv_scale", torch.ones(2, num_kv_heads, dtype=torch.float32))
        else:
            self.kv_scale = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                cos_sin: Optional[torch.Tensor] = None) -> torch.Tensor:
        # q: [T, num_heads * d]; k, v: [T, num_kv_heads * d] -> [T, num_heads * d].
        # cos_sin: None when q and k are rotated already, else the step's RoPE rows [T, d] float32.
        ctx = get_forward_context()
        t = q.shape[0]
        out = ctx.backend.forward(
            q.view(t, self.num_heads, self.head_dim),
            k.view(t, self.num_kv_heads, self.head_dim),
            v.view(t, self.num_kv_heads, self.head_dim),
            ctx.kv_caches[self.layer_idx], ctx.attn_metadata, self.scale, cos_sin, kv_scale=self.kv_scale)
        return out.reshape(t, self.num_heads * self.head_dim)

"""Paged attention on the GPU through Triton kernels (tritium/kernels).

Per layer: one launch rotates q and k (RoPE) and stores k/v into the cache; then decode-only
steps run the split-KV decode kernel (graph-safe: lengths are read on the device) and every
other step runs the variable-length prefill kernel over the paged cache.
"""
from __future__ import annotations

from typing import Optional

import torch

from tritium.attention.backend import AttentionBackend, AttentionMetadata
from tritium.kernels.decode_attention import num_kv_splits, paged_decode_attention
from tritium.kernels.prefill_attention import paged_prefill_attention
from tritium.kernels.rope_kv_write import rope_and_write_kv


class TritonAttentionBackend(AttentionBackend):
    name = "triton"
    fuses_rope = True

    def __init__(self, num_sms: Optional[int] = None):
        if num_sms is None and torch.cuda.is_available():
            num_sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
        self.num_sms = num_sms or 132

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float,
                cos_sin: Optional[torch.Tensor] = None, kv_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        # q: [T, H, D]; k, v: [T, KVH, D] (views into the fused qkv projection)
        rope_and_write_kv(q, k, v, cos_sin, kv_cache, meta.slot_mapping[:q.shape[0]], kv_scale)
        if meta.is_pure_decode:
            splits = meta.num_kv_splits
            if splits is None:
                splits = num_kv_splits(meta.num_reqs, kv_cache.shape[3], meta.max_seq_len, self.num_sms)
            workspace = meta.backend_cache.get("decode_workspace")
            return paged_decode_attention(q, kv_cache, meta.block_tables, meta.seq_lens, scale,
                                          num_splits=splits, workspace=workspace, kv_scale=kv_scale)
        return paged_prefill_attention(q, kv_cache, meta.block_tables, meta.query_start_loc, meta.seq_lens,
                                       meta.max_query_len, scale, kv_scale=kv_scale)

"""Paged attention on the GPU through Triton kernels (tritium/kernels).

Per layer: one launch rotates q and k (RoPE) and stores k/v into the cache; then decode-only
steps run the split-KV decode kernel (graph-safe: lengths are read on the device) and every
other step runs the variable-length prefill kernel over the paged cache, less its leading
one-token requests (AttentionMetadata.num_decodes), which go through the decode kernel.
"""
from __future__ import annotations

from typing import Optional

import torch

from tritium.attention.backend import AttentionBackend, AttentionMetadata
from tritium.kernels import mixed_decode_split_enabled
from tritium.kernels.decode_attention import decode_workspace, num_kv_splits, paged_decode_attention
from tritium.kernels.prefill_attention import paged_prefill_attention
from tritium.kernels.rope_kv_write import rope_and_write_kv


class TritonAttentionBackend(AttentionBackend):
    name = "triton"
    fuses_rope = True

    def __init__(self, num_sms: Optional[int] = None):
        if num_sms is None and torch.cuda.is_available():
            num_sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
        self.num_sms = num_sms or 132
        self.split_mixed_decodes = mixed_decode_split_enabled()  # read once: forward runs every layer

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float,
                cos_sin: Optional[torch.Tensor] = None, kv_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        # q: [T, H, D]; k, v: [T, KVH, D] (views into the fused qkv projection)
        rope_and_write_kv(q, k, v, cos_sin, kv_cache, meta.slot_mapping[:q.shape[0]], kv_scale)
        if meta.is_pure_decode:
            splits = meta.num_kv_splits
            if splits is None:
                splits = num_kv_splits(meta.num_reqs, kv_cache.shape[3], meta.max_seq_len, self.num_sms)
            return paged_decode_attention(q, kv_cache, meta.block_tables, meta.seq_lens, scale, num_splits=splits,
                                          workspace=self._workspace(meta, q, splits), kv_scale=kv_scale)
        num_decodes = meta.num_decodes if self.split_mixed_decodes else 0
        if not num_decodes:
            return paged_prefill_attention(q, kv_cache, meta.block_tables, meta.query_start_loc, meta.seq_lens,
                                           meta.max_query_len, scale, kv_scale=kv_scale)
        # A mixed step: its leading one-token requests through the decode kernel (all query heads
        # of a KV head in one program: the prefill kernel would read their keys once per query
        # head, into 64-row tiles of one row), the rest through the prefill kernel.
        split = meta.backend_cache.get("mixed_split")
        if split is None:  # the step's views, made once for all layers (eager steps are host-bound)
            split = meta.backend_cache["mixed_split"] = (
                num_kv_splits(num_decodes, kv_cache.shape[3], meta.max_seq_len, self.num_sms),
                meta.block_tables[num_decodes:], meta.query_start_loc[num_decodes:], meta.seq_lens[num_decodes:])
        splits, prefill_tables, prefill_starts, prefill_lens = split
        out = torch.empty_like(q)
        paged_decode_attention(q[:num_decodes], kv_cache, meta.block_tables, meta.seq_lens, scale, num_splits=splits,
                               out=out[:num_decodes], workspace=self._workspace(meta, q[:num_decodes], splits),
                               kv_scale=kv_scale)
        paged_prefill_attention(q, kv_cache, prefill_tables, prefill_starts, prefill_lens, meta.max_query_len, scale,
                                out=out, kv_scale=kv_scale)
        return out

    @staticmethod
    def _workspace(meta: AttentionMetadata, q: torch.Tensor, splits: int):
        """The step's split-KV scratch for its decode rows q [S, H, D] (a CUDA graph brings its own),
        made at the first layer and reused by the others; None without splits."""
        if splits == 1:
            return None
        workspace = meta.backend_cache.get("decode_workspace")
        if workspace is None:
            num_seqs, num_heads, head_dim = q.shape
            workspace = decode_workspace(num_seqs, num_heads, head_dim, splits, q.device)
            meta.backend_cache["decode_workspace"] = workspace
        return workspace

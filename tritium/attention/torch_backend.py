"""Reference attention over the paged KV cache in plain PyTorch (CPU and GPU).

Decode-only steps are batched (gather each request's blocks, mask by length); steps with
prefill chunks attend request by request. Correctness first: this is the test reference
for the fast kernels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tritium.attention.backend import AttentionBackend, AttentionMetadata


def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Scatter this step's k/v ([num_tokens, num_kv_heads, head_dim]) into their cache slots."""
    num_blocks, block_size = kv_cache.shape[1], kv_cache.shape[2]
    flat = kv_cache.view(2, num_blocks * block_size, *kv_cache.shape[3:])  # [2, slots, kvh, d]
    flat[0].index_copy_(0, slot_mapping, k.to(kv_cache.dtype))
    flat[1].index_copy_(0, slot_mapping, v.to(kv_cache.dtype))


def gather_kv(kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One request's first seq_len cached k and v: each [seq_len, num_kv_heads, head_dim]."""
    block_size = kv_cache.shape[2]
    num_blocks = (seq_len + block_size - 1) // block_size
    blocks = block_table[:num_blocks].long()
    k = kv_cache[0, blocks].flatten(0, 1)[:seq_len]  # [seq_len, kvh, d]
    v = kv_cache[1, blocks].flatten(0, 1)[:seq_len]
    return k, v


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        n = meta.num_actual_tokens
        write_kv(kv_cache, k[:n], v[:n], meta.slot_mapping[:n])
        out = torch.empty_like(q)
        if meta.is_pure_decode:
            out[:n] = self._decode(q[:n], kv_cache, meta, scale)
        else:
            for r in range(meta.num_reqs):
                start, end = meta.query_start_loc_cpu[r], meta.query_start_loc_cpu[r + 1]
                out[start:end] = self._prefill_one(q[start:end], kv_cache, meta.block_tables[r],
                                                   meta.seq_lens_cpu[r], scale)
        return out

    @staticmethod
    def _prefill_one(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int,
                     scale: float) -> torch.Tensor:
        # q: [q_len, num_heads, d]; the q_len new tokens are the last of seq_len.
        q_len, num_heads, _ = q.shape
        k, v = gather_kv(kv_cache, block_table, seq_len)  # [seq_len, kvh, d]
        context_len = seq_len - q_len
        q_pos = torch.arange(context_len, seq_len, device=q.device)[:, None]  # [q_len, 1]
        k_pos = torch.arange(seq_len, device=q.device)[None, :]  # [1, seq_len]
        mask = k_pos <= q_pos  # [q_len, seq_len]
        group = num_heads // k.shape[1]
        qh = q.transpose(0, 1)  # [num_heads, q_len, d]
        kh = k.transpose(0, 1).repeat_interleave(group, dim=0).to(q.dtype)  # [num_heads, seq_len, d]
        vh = v.transpose(0, 1).repeat_interleave(group, dim=0).to(q.dtype)
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
        return o.transpose(0, 1)  # [q_len, num_heads, d]

    @staticmethod
    def _decode(q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        # q: [num_reqs, num_heads, d], one token per request.
        num_reqs, num_heads, d = q.shape
        block_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
        max_blocks = (meta.max_seq_len + block_size - 1) // block_size
        blocks = meta.block_tables[:, :max_blocks].long()  # [R, B]
        k = kv_cache[0, blocks].flatten(1, 2)  # [R, B*bs, kvh, d]
        v = kv_cache[1, blocks].flatten(1, 2)
        group = num_heads // num_kv_heads
        qg = q.view(num_reqs, num_kv_heads, group, d)  # [R, kvh, g, d]
        kt = k.permute(0, 2, 3, 1).to(q.dtype)  # [R, kvh, d, S]
        scores = torch.matmul(qg, kt).float() * scale  # [R, kvh, g, S]
        k_pos = torch.arange(k.shape[1], device=q.device)
        valid = k_pos[None, :] < meta.seq_lens[:, None]  # [R, S]
        scores.masked_fill_(~valid[:, None, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(q.dtype)
        o = torch.matmul(probs, v.permute(0, 2, 1, 3).to(q.dtype))  # [R, kvh, g, d]
        return o.reshape(num_reqs, num_heads, d)

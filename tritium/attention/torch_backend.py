"""Reference attention over the paged KV cache in plain PyTorch (CPU and GPU).

Decode-only steps are batched: every layer gathers the requests' blocks with one index_select
and attends in float32 through two bmm calls (CPU bfloat16 bmm is several times slower at these
sizes), with the gather indices and the length mask built once per step (meta.backend_cache).
Steps with prefill chunks run one SDPA call over all the step's queries and all its requests'
keys under a block-diagonal causal mask while that is small (MAX_BATCHED_PAIRS), else request
by request. Correctness first: this is the test reference for the fast kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from tritium.attention.backend import AttentionBackend, AttentionMetadata
from tritium.quantization.kv_cache import dequantize_kv, is_quantized_kv, quantize_kv

# A prefill step attends in one call while (its tokens) x (its requests' keys) stays below this:
# the batched call computes every query-key pair, most of them masked when the requests are long.
MAX_BATCHED_PAIRS = 1 << 22


def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor,
             kv_scale: Optional[torch.Tensor] = None) -> None:
    """Scatter this step's k/v ([num_tokens, num_kv_heads, head_dim]) into their cache slots;
    kv_scale [2, kvh]: a quantized cache's dequant multipliers (values are divided by them)."""
    flat = kv_cache.view(2, -1, *kv_cache.shape[3:])  # [2, num_blocks * block_size, kvh, d]
    kv = torch.stack((k, v))  # [2, T, kvh, d]
    if kv_scale is not None:
        kv = quantize_kv(kv, kv_scale[:, None, :, None], kv_cache.dtype)
    kv = kv.to(kv_cache.dtype)
    if kv_cache.dtype == torch.float8_e4m3fn:  # CPU index ops lack FP8: move the bytes
        flat, kv = flat.view(torch.uint8), kv.view(torch.uint8)
    flat.index_copy_(1, slot_mapping, kv)  # k and v in one scatter


def _index_select(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """index_select that also takes FP8 tensors (through their bytes)."""
    if x.dtype == torch.float8_e4m3fn:
        return x.view(torch.uint8).index_select(dim, index).view(x.dtype)
    return x.index_select(dim, index)


def _read(kv: torch.Tensor, scale: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Cache values -> `dtype`; scale broadcasts against kv (None: not quantized)."""
    return kv.to(dtype) if scale is None else dequantize_kv(kv, scale, dtype)


def gather_kv(kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One request's first seq_len cached k and v, as stored: each [seq_len, num_kv_heads, head_dim]."""
    block_size = kv_cache.shape[2]
    num_blocks = (seq_len + block_size - 1) // block_size
    blocks = block_table[:num_blocks].long()
    k = kv_cache[0, blocks].flatten(0, 1)[:seq_len]  # [seq_len, kvh, d]
    v = kv_cache[1, blocks].flatten(0, 1)[:seq_len]
    return k, v


def rotate_neox(x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, d] rotated by cos_sin [T, d] float32 (cos | sin halves), rounded once to x's dtype."""
    cos, sin = cos_sin[:, None, :].chunk(2, dim=-1)  # each [T, 1, d / 2]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float, cos_sin=None,
                kv_scale=None) -> torch.Tensor:
        if cos_sin is not None:
            q, k = rotate_neox(q, cos_sin), rotate_neox(k, cos_sin)
        if not is_quantized_kv(kv_cache.dtype):  # the cache's dtype decides, as in the Triton kernels
            kv_scale = None  # (a scratch cache in the model dtype: calibration, memory profiling)
        n = meta.num_actual_tokens
        if n < q.shape[0]:  # padded batch: attend the first n rows; the rest stay uninitialised
            out = torch.empty_like(q)
            out[:n] = self.forward(q[:n], k[:n], v[:n], kv_cache, meta, scale, kv_scale=kv_scale)  # rotated
            return out
        write_kv(kv_cache, k, v, meta.slot_mapping[:n], kv_scale)
        if meta.is_pure_decode:
            return self._decode(q, kv_cache, meta, scale, kv_scale)
        if n * sum(meta.seq_lens_cpu) <= MAX_BATCHED_PAIRS:
            return self._prefill_batched(q, kv_cache, meta, scale, kv_scale)
        out = torch.empty_like(q)
        for r in range(meta.num_reqs):
            start, end = meta.query_start_loc_cpu[r], meta.query_start_loc_cpu[r + 1]
            out[start:end] = self._prefill_one(q[start:end], kv_cache, meta.block_tables[r],
                                               meta.seq_lens_cpu[r], scale, kv_scale)
        return out

    @staticmethod
    def _prefill_one(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int,
                     scale: float, kv_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        # q: [q_len, num_heads, d]; the q_len new tokens are the last of seq_len.
        q_len, num_heads, _ = q.shape
        k, v = gather_kv(kv_cache, block_table, seq_len)  # [seq_len, kvh, d]
        if kv_scale is not None:
            k, v = _read(k, kv_scale[0][:, None], q.dtype), _read(v, kv_scale[1][:, None], q.dtype)
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
    def _prefill_plan(kv_cache: torch.Tensor, meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """Once per step: the cache slots of every request's keys, request after request
        ([K] long, K = sum of seq_lens), and the mask [T, K]: a query sees its own request's keys
        up to its own position."""
        plan = meta.backend_cache.get("torch_prefill")
        if plan is None:
            dev, block_size = kv_cache.device, kv_cache.shape[2]
            q_lens = [b - a for a, b in zip(meta.query_start_loc_cpu, meta.query_start_loc_cpu[1:])]
            reqs = torch.arange(meta.num_reqs, device=dev)
            num_keys = sum(meta.seq_lens_cpu)  # output sizes given: no device sync
            q_req = reqs.repeat_interleave(torch.tensor(q_lens, device=dev), output_size=meta.num_actual_tokens)  # [T]
            k_req = reqs.repeat_interleave(meta.seq_lens.long(), output_size=num_keys)  # [K]
            k_start = torch.cumsum(meta.seq_lens.long(), 0) - meta.seq_lens  # [R] first key of each request
            k_pos = torch.arange(num_keys, device=dev) - k_start[k_req]  # [K] position in its request
            context = meta.seq_lens - (meta.query_start_loc[1:] - meta.query_start_loc[:-1])  # [R]
            q_first = meta.query_start_loc[:-1] - context  # [R] where position 0 would sit in the flat batch
            q_pos = torch.arange(meta.num_actual_tokens, device=dev) - q_first[q_req]  # [T] position in its request
            slots = meta.block_tables[k_req, k_pos // block_size].long() * block_size + k_pos % block_size  # [K]
            mask = (q_req[:, None] == k_req[None, :]) & (k_pos[None, :] <= q_pos[:, None])  # [T, K]
            plan = meta.backend_cache["torch_prefill"] = (slots, mask)
        return plan

    @classmethod
    def _prefill_batched(cls, q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata,
                         scale: float, kv_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        # q: [T, num_heads, d], every request's new tokens.
        slots, mask = cls._prefill_plan(kv_cache, meta)
        flat = kv_cache.view(2, -1, *kv_cache.shape[3:])  # [2, num_blocks * block_size, kvh, d]
        kv_scale = None if kv_scale is None else kv_scale[:, None, :, None]  # [2, 1, kvh, 1]
        kv = _read(_index_select(flat, 1, slots), kv_scale, q.dtype).transpose(1, 2)  # [2, kvh, K, d]
        o = F.scaled_dot_product_attention(q.transpose(0, 1), kv[0], kv[1], attn_mask=mask, scale=scale,
                                           enable_gqa=True)  # [num_heads, T, d]
        return o.transpose(0, 1)  # [T, num_heads, d]

    @staticmethod
    def _decode_plan(kv_cache: torch.Tensor, meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """Once per step: the blocks to gather, [R * B] long (B blocks cover max_seq_len), and the
        additive length mask, [R * kv_heads, 1, max_seq_len] float32 (0, or -inf past seq_len)."""
        plan = meta.backend_cache.get("torch_decode")
        if plan is None:
            block_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
            num_blocks = -(-meta.max_seq_len // block_size)
            blocks = meta.block_tables[:, :num_blocks].reshape(-1).long()  # [R * B]
            k_pos = torch.arange(meta.max_seq_len, device=kv_cache.device)  # [S]
            past_end = k_pos[None, :] >= meta.seq_lens[:, None]  # [R, S]
            mask = torch.zeros(past_end.shape, device=kv_cache.device).masked_fill_(past_end, float("-inf"))
            plan = blocks, mask.repeat_interleave(num_kv_heads, dim=0)[:, None, :]  # [R * kvh, 1, S]
            meta.backend_cache["torch_decode"] = plan
        return plan

    @classmethod
    def _decode(cls, q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float,
                kv_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        # q: [R, num_heads, d], one token per request.
        num_reqs, num_heads, d = q.shape
        _, num_blocks, block_size, num_kv_heads, _ = kv_cache.shape
        group, seq = num_heads // num_kv_heads, meta.max_seq_len
        blocks, mask = cls._decode_plan(kv_cache, meta)
        kv = _index_select(kv_cache.view(2, num_blocks, -1), 1, blocks)  # [2, R * B, block_size * kvh * d]
        kv = kv.view(2, num_reqs, -1, num_kv_heads, d)[:, :, :seq].transpose(2, 3)  # [2, R, kvh, S, d]
        kv_f = torch.empty(kv.shape, dtype=torch.float32, device=q.device).copy_(kv)  # contiguous float32
        if kv_scale is not None:
            kv_f *= kv_scale[:, None, :, None, None]  # [2, 1, kvh, 1, 1]
        k = kv_f[0].view(num_reqs * num_kv_heads, seq, d)
        v = kv_f[1].view(num_reqs * num_kv_heads, seq, d)
        # Query heads h * group .. (h + 1) * group - 1 share KV head h (HF's repeat_interleave order).
        qg = q.reshape(num_reqs * num_kv_heads, group, d).float()  # [R * kvh, g, d]
        scores = torch.baddbmm(mask, qg, k.transpose(1, 2), alpha=scale)  # [R * kvh, g, S]
        o = torch.bmm(torch.softmax(scores, dim=-1), v)  # [R * kvh, g, d]
        return o.view(num_reqs, num_heads, d).to(q.dtype)

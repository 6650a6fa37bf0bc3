"""Causal variable-length attention over the paged KV cache: prefill, chunked prefill over a
cached prefix, and mixed batches of prefills and decodes, in one launch.

The step's k/v are already in the cache, so every key is read through the block table.
Grid (cdiv(max_query_len, BLOCK_M), num_seqs, num_heads): a program owns BLOCK_M query tokens
of one head of one sequence and walks the keys up to its last token's position (causal tile
skipping); programs past a sequence's query length exit at once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritium.kernels import dot_precision, interpreting, next_pow2, step_metadata_jit
from tritium.kernels.paged_kv import attention_kv_mode, load_kv_scales, load_kv_tile, online_softmax_step, query_for_dot


@step_metadata_jit(ints=("stride_bt",),
                   pointers=("kv_scale_ptr", "block_tables_ptr", "query_start_loc_ptr", "seq_lens_ptr"))
def _prefill_kernel(q_ptr, kv_ptr, kv_scale_ptr, block_tables_ptr, query_start_loc_ptr, seq_lens_ptr, out_ptr,
                    scale_log2e,
                    stride_qt, stride_qh, stride_kv, stride_blk, stride_tok, stride_kvh, stride_bt,
                    stride_ot, stride_oh,
                    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    DOT_F32: tl.constexpr, PRECISION: tl.constexpr, QUANT: tl.constexpr,
                    NUM_KV_HEADS: tl.constexpr):
    m_block = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    if m_block * BLOCK_M >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    context_len = seq_len - q_len
    kv_head = head // GROUP

    rows = m_block * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query index within the sequence
    r_mask = rows < q_len
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    q = tl.load(q_ptr + (q_start + rows)[:, None] * stride_qt + head * stride_qh + d[None, :],
                mask=r_mask[:, None] & d_mask[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
    q = query_for_dot(q, QUANT, DOT_F32)
    q_pos = context_len + rows  # [BLOCK_M] position of each query token

    k_scale, v_scale = load_kv_scales(kv_scale_ptr, kv_head, NUM_KV_HEADS, QUANT)
    score_scale = scale_log2e * k_scale  # the key scale, folded into the scores
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    end = tl.minimum(seq_len, context_len + (m_block + 1) * BLOCK_M)  # keys the last row can see
    for n0 in range(0, end, BLOCK_N):
        toks = n0 + tl.arange(0, BLOCK_N)  # [BLOCK_N] key positions
        t_mask = toks < end
        k, v = load_kv_tile(kv_ptr, block_tables_ptr, seq, toks, t_mask, d, d_mask, kv_head,
                            stride_kv, stride_blk, stride_tok, stride_kvh, stride_bt, BLOCK_SIZE, HEAD_DIM, QUANT,
                            DOT_F32, q.dtype)
        visible = (toks[None, :] <= q_pos[:, None]) & t_mask[None, :]  # causal; key 0 is visible to every row
        m, l, acc = online_softmax_step(q, k, v, visible, m, l, acc, score_scale, PRECISION)

    o = acc * (v_scale / l)[:, None]  # the value scale, folded in
    tl.store(out_ptr + (q_start + rows)[:, None] * stride_ot + head * stride_oh + d[None, :],
             o.to(out_ptr.dtype.element_ty), mask=r_mask[:, None] & d_mask[None, :])


def paged_prefill_attention(q: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                            query_start_loc: torch.Tensor, seq_lens: torch.Tensor, max_query_len: int,
                            scale: float, out: torch.Tensor | None = None,
                            kv_scale: torch.Tensor | None = None) -> torch.Tensor:
    """q: [T, H, D] (the step's tokens, sequence after sequence); query_start_loc: [S + 1] int32;
    seq_lens: [S] int32 (cached context + this step's tokens). Returns [T, H, D]. A float8_e4m3fn /
    int8 cache needs kv_scale [2, KVH] float32 (dequant multipliers)."""
    num_tokens, num_heads, head_dim = q.shape
    _, _, block_size, num_kv_heads, _ = kv_cache.shape
    assert q.stride(2) == 1 and kv_cache.stride(4) == 1 and num_heads % num_kv_heads == 0
    num_seqs = seq_lens.shape[0]
    quant = attention_kv_mode(kv_cache)
    assert quant == 0 or (kv_scale is not None and kv_scale.shape == (2, num_kv_heads))
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    block_d = max(next_pow2(head_dim), 16)
    block_m = 64 if block_d <= 128 else 32
    grid = (triton.cdiv(max_query_len, block_m), num_seqs, num_heads)
    _prefill_kernel[grid](
        q, kv_cache, kv_scale if quant else q, block_tables, query_start_loc, seq_lens, out,
        scale * 1.4426950408889634,
        q.stride(0), q.stride(1), kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_SIZE=block_size,
        BLOCK_M=block_m, BLOCK_N=64, DOT_F32=interpreting(), PRECISION=dot_precision(q.dtype),
        QUANT=quant, NUM_KV_HEADS=num_kv_heads,
        num_warps=4 if block_d <= 64 else 8, num_stages=2)
    return out

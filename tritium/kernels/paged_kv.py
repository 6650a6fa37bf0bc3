"""Building blocks shared by the paged attention kernels (inlined into them by Triton)."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_kv_tile(kv_ptr, block_tables_ptr, seq, toks, t_mask, d, d_mask, kv_head,
                 stride_kv, stride_blk, stride_tok, stride_kvh, stride_bt,
                 BLOCK_SIZE: tl.constexpr, DOT_F32: tl.constexpr,
                 k_scale=1.0, v_scale=1.0, QUANT: tl.constexpr = 0, OUT_TY: tl.constexpr = tl.float32):
    """k and v ([BLOCK_N, BLOCK_D]) of sequence `seq` at key positions `toks`, read through its
    block-table row; masked positions read as 0. A quantized cache (QUANT 1: FP8, 2: int8) is
    multiplied by the KV head's scales and handed over in OUT_TY (the query's dtype)."""
    blocks = tl.load(block_tables_ptr + seq * stride_bt + toks // BLOCK_SIZE, mask=t_mask, other=0)
    offs = blocks.to(tl.int64) * stride_blk + (toks % BLOCK_SIZE) * stride_tok + kv_head * stride_kvh
    kv_mask = t_mask[:, None] & d_mask[None, :]
    k = tl.load(kv_ptr + offs[:, None] + d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(kv_ptr + stride_kv + offs[:, None] + d[None, :], mask=kv_mask, other=0.0)
    if QUANT != 0:
        k = (k.to(tl.float32) * k_scale).to(OUT_TY)
        v = (v.to(tl.float32) * v_scale).to(OUT_TY)
    if DOT_F32:  # Triton's interpreter computes bf16 dots wrongly: give it float32
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    return k, v


@triton.jit
def load_kv_scales(kv_scale_ptr, kv_head, num_kv_heads, QUANT: tl.constexpr):
    """(k_scale, v_scale) of one KV head (1.0 for an unquantized cache)."""
    if QUANT != 0:
        return tl.load(kv_scale_ptr + kv_head), tl.load(kv_scale_ptr + num_kv_heads + kv_head)
    return 1.0, 1.0


@triton.jit
def online_softmax_step(q, k, v, visible, m, l, acc, scale_log2e, PRECISION: tl.constexpr):
    """One key tile of flash attention: scores of q [R, D] against k [N, D] where `visible`
    ([R, N]) allows, folded into the running max m [R], sum l [R] and output acc [R, D]
    (base-2 exponentials; scale_log2e = softmax scale * log2(e)). Each row must see a key in
    some tile before its first exponential, or have m = -inf throughout (then l stays 0)."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2e  # [R, N]
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(s - m_new[:, None])
    l = l * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l, acc

"""Building blocks shared by the paged attention kernels (inlined into them by Triton)."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_kv_tile(kv_ptr, block_tables_ptr, seq, toks, t_mask, d, d_mask, kv_head,
                 stride_kv, stride_blk, stride_tok, stride_kvh, stride_bt,
                 BLOCK_SIZE: tl.constexpr, DOT_F32: tl.constexpr, OUT_TY: tl.constexpr = tl.float32):
    """k and v ([BLOCK_N, BLOCK_D]) of sequence `seq` at key positions `toks`, read through its
    block-table row; masked positions read as 0. A quantized cache's values come back unscaled
    in OUT_TY (FP8 e4m3 and int8 are exact in float16): the callers fold the KV head's scales
    into the scores and the output (two multiplies a row, not two per element)."""
    blocks = tl.load(block_tables_ptr + seq * stride_bt + toks // BLOCK_SIZE, mask=t_mask, other=0)
    offs = blocks.to(tl.int64) * stride_blk + (toks % BLOCK_SIZE) * stride_tok + kv_head * stride_kvh
    kv_mask = t_mask[:, None] & d_mask[None, :]
    k = tl.load(kv_ptr + offs[:, None] + d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(kv_ptr + stride_kv + offs[:, None] + d[None, :], mask=kv_mask, other=0.0)
    if DOT_F32:  # Triton's interpreter computes bf16 dots wrongly: give it float32
        k, v = k.to(tl.float32), v.to(tl.float32)
    else:
        k, v = k.to(OUT_TY), v.to(OUT_TY)
    return k, v


@triton.jit
def query_for_dot(q, QUANT: tl.constexpr, DOT_F32: tl.constexpr):
    """The query tile in the dots' input type: float32 in the interpreter; a 16-bit query against a
    quantized cache in float16 (the cache's values convert to float16 exactly, in one
    instruction per pair), clamped to float16's range; else as loaded."""
    if DOT_F32:
        q = q.to(tl.float32)
    elif QUANT != 0 and not q.dtype.is_fp32():
        q = tl.minimum(tl.maximum(q.to(tl.float32), -65504.0), 65504.0).to(tl.float16)
    return q


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

"""Building blocks shared by the paged attention kernels (inlined into them by Triton)."""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from tritium.kernels import kv_quant_mode

FP8_PAIRS = tl.constexpr(3)  # the attention kernels' QUANT for an FP8 cache read in 16-bit pairs (_load_e4m3_pairs)


def attention_kv_mode(cache, split_decode: bool = False) -> int:
    """The attention kernels' QUANT for a KV cache tensor: kv_quant_mode's, except an FP8 cache read
    in 16-bit pairs. TRITIUM_FP8_KV_PAIRS: "auto" (default) pairs in a decode split over the keys
    (split_decode: small batches, long contexts; on an H200 batch 1 at 8,000 tokens ran 4% faster)
    and bytes elsewhere (large batches' two-warp programs ran slower with pairs: FP8 1000/1000 -5.5%);
    "1" pairs everywhere, "0" never. The pairs' conversion instruction needs compute capability 8.9."""
    mode = kv_quant_mode(cache.dtype)
    setting = os.environ.get("TRITIUM_FP8_KV_PAIRS", "auto")
    if setting not in ("auto", "0", "1"):
        raise ValueError(f"TRITIUM_FP8_KV_PAIRS={setting!r}: expected auto, 0 or 1")
    if mode != 1 or setting == "0" or (setting != "1" and not split_decode):
        return mode
    if cache.is_cuda and not converts_e4m3_pairs(torch.device(cache.device).index or 0):
        return mode
    return FP8_PAIRS.value


@functools.lru_cache(maxsize=None)
def converts_e4m3_pairs(index: int) -> bool:
    """Whether GPU `index` has cvt.rn.f16x2.e4m3x2 (compute capability 8.9): asked once a device,
    not at every attention launch."""
    return torch.cuda.get_device_capability(index) >= (8, 9)


@triton.jit
def load_kv_tile(kv_ptr, block_tables_ptr, seq, toks, t_mask, d, d_mask, kv_head,
                 stride_kv, stride_blk, stride_tok, stride_kvh, stride_bt,
                 BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, QUANT: tl.constexpr, DOT_F32: tl.constexpr,
                 OUT_TY: tl.constexpr = tl.float32):
    """k and v ([BLOCK_N, BLOCK_D]) of sequence `seq` at key positions `toks`, read through its
    block-table row; masked positions read as 0. A quantized cache's values come back unscaled
    in OUT_TY (FP8 e4m3 and int8 are exact in float16): the callers fold the KV head's scales
    into the scores and the output (two multiplies a row, not two per element)."""
    blocks = tl.load(block_tables_ptr + seq * stride_bt + toks // BLOCK_SIZE, mask=t_mask, other=0)
    offs = blocks.to(tl.int64) * stride_blk + (toks % BLOCK_SIZE) * stride_tok + kv_head * stride_kvh
    if QUANT == FP8_PAIRS:
        k = _load_e4m3_pairs(kv_ptr, offs, t_mask, HEAD_DIM, d.shape[0], DOT_F32)
        v = _load_e4m3_pairs(kv_ptr + stride_kv, offs, t_mask, HEAD_DIM, d.shape[0], DOT_F32)
    else:
        kv_mask = t_mask[:, None] & d_mask[None, :]
        k = tl.load(kv_ptr + offs[:, None] + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(kv_ptr + stride_kv + offs[:, None] + d[None, :], mask=kv_mask, other=0.0)
    if DOT_F32:  # Triton's interpreter computes bf16 dots wrongly: give it float32
        k, v = k.to(tl.float32), v.to(tl.float32)
    else:
        k, v = k.to(OUT_TY), v.to(OUT_TY)
    return k, v


@triton.jit
def _load_e4m3_pairs(ptr, offs, t_mask, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, INTERPRETED: tl.constexpr):
    """An FP8 e4m3 tile [BLOCK_N, BLOCK_D] read as 16-bit pairs and converted to float16 pair by pair
    before Triton lays it out for the dots. Loaded as bytes, Triton stages the tile in shared memory
    as bytes and reads each thread's operand bytes back with scalar loads (712 instructions a
    64-key tile for sm_90, where a bf16 tile takes 425); as pairs, 520
    (scripts/inspect_attention_sass.py). Row offsets are in elements and even (head dims are)."""
    HALF_D: tl.constexpr = BLOCK_D // 2
    pairs = tl.arange(0, HALF_D)
    mask = t_mask[:, None] & (pairs < HEAD_DIM // 2)[None, :]
    words = tl.load(ptr.to(tl.pointer_type(tl.int16)) + (offs // 2)[:, None] + pairs[None, :], mask=mask,
                    other=0)  # [BLOCK_N, HALF_D]: elements 2j (low byte) and 2j + 1
    if INTERPRETED:
        lo, hi = _e4m3_pair_bits(words)
    else:
        lo, hi = tl.inline_asm_elementwise("{ .reg .b32 t; cvt.rn.f16x2.e4m3x2 t, $2; mov.b32 {$0, $1}, t; }",
                                           "=h,=h,h", [words], dtype=(tl.float16, tl.float16), is_pure=True, pack=1)
    return tl.reshape(tl.join(lo, hi), [offs.shape[0], BLOCK_D])  # pairs back in place: [BLOCK_N, BLOCK_D]


@triton.jit
def _e4m3_pair_bits(words):
    """The interpreter's _load_e4m3_pairs conversion (it runs no PTX): each byte of the word
    reinterpreted as e4m3 and converted by Triton."""
    lo = (words & 0xFF).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
    hi = ((words >> 8) & 0xFF).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
    return lo.to(tl.float16), hi.to(tl.float16)


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

"""RoPE on q and k fused with the KV-cache write: one launch per layer instead of ~10 ops.

Grid (num_tokens,): a program rotates every q head of its token in place (neox / rotate_half
layout: out = [x1 cos - x2 sin | x2 cos + x1 sin], computed in float32) and stores its rotated
k heads and its v heads into the cache slot slot_mapping[t] (slot < 0: a padding token, not
stored). k is rotated in place too, so callers may read it back.
A quantized cache (float8_e4m3fn or int8) stores k / k_scale[head] and v / v_scale[head],
saturated (and rounded half away from zero for int8), from kv_scale [2, kv_heads] float32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritium.kernels import interpreting, kv_quant_mode, next_pow2
from tritium.kernels.pdl import launch_options, let_next_kernel_launch, wait_for_previous_kernel


@triton.jit
def _quantize(x, scale, QUANT: tl.constexpr, out_ty: tl.constexpr, ROUND_FP8: tl.constexpr):
    """x (float) -> the cache dtype: plain cast (QUANT 0), FP8 e4m3 (1) or int8 (2) of x / scale.
    ROUND_FP8: round onto the e4m3 grid in float32 first (Triton 3.6's interpreter converts a
    value whose rounding carries into the next power of two to half of it: 126.9 -> 64)."""
    if QUANT == 0:
        return x.to(out_ty)
    y = tl.math.div_rn(x.to(tl.float32), scale)  # IEEE division: rounds as torch does (Triton's `/` is approximate)
    if QUANT == 1:
        return _saturate_e4m3(y, out_ty, ROUND_FP8)
    y = tl.where(y >= 0, tl.floor(y + 0.5), tl.ceil(y - 0.5))
    return tl.minimum(tl.maximum(y, -127.0), 127.0).to(out_ty)


@triton.jit
def _saturate_e4m3(y, out_ty: tl.constexpr, ROUND_FP8: tl.constexpr):
    """float32 y -> FP8 e4m3 (out_ty), saturating at +-448; ROUND_FP8: see _quantize."""
    if ROUND_FP8:
        step = tl.exp2(tl.floor(tl.log2(tl.maximum(tl.abs(y), 0.015625))) - 3.0)  # e4m3: 3 mantissa bits
        t = y / step
        r = tl.floor(t + 0.5)
        r = tl.where((r - t == 0.5) & (r - 2.0 * tl.floor(r * 0.5) != 0.0), r - 1.0, r)  # ties to even
        y = r * step
    return tl.minimum(tl.maximum(y, -448.0), 448.0).to(out_ty)


@triton.jit
def _rope_kv_write_kernel(q_ptr, k_ptr, v_ptr, cos_sin_ptr, slot_ptr, kv_ptr, kv_scale_ptr,
                          stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_cs,
                          stride_kv, stride_slot, stride_kvh,
                          NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, BLOCK_H: tl.constexpr,
                          BLOCK_KVH: tl.constexpr, HALF: tl.constexpr, BLOCK_HALF: tl.constexpr,
                          ROTATE: tl.constexpr, QUANT: tl.constexpr,
                          ROUND_FP8: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous_kernel(USE_PDL)
    t = tl.program_id(0)
    j = tl.arange(0, BLOCK_HALF)
    j_mask = j < HALF
    cos = tl.load(cos_sin_ptr + t * stride_cs + j, mask=j_mask, other=0.0)[None, :]  # [1, BLOCK_HALF] float32
    sin = tl.load(cos_sin_ptr + t * stride_cs + HALF + j, mask=j_mask, other=0.0)[None, :]

    if ROTATE:
        h = tl.arange(0, BLOCK_H)
        q_mask = (h < NUM_HEADS)[:, None] & j_mask[None, :]
        q1_ptrs = q_ptr + t * stride_qt + h[:, None] * stride_qh + j[None, :]  # [BLOCK_H, BLOCK_HALF]
        q1 = tl.load(q1_ptrs, mask=q_mask, other=0.0).to(tl.float32)
        q2 = tl.load(q1_ptrs + HALF, mask=q_mask, other=0.0).to(tl.float32)
        tl.store(q1_ptrs, (q1 * cos - q2 * sin).to(q_ptr.dtype.element_ty), mask=q_mask)
        tl.store(q1_ptrs + HALF, (q2 * cos + q1 * sin).to(q_ptr.dtype.element_ty), mask=q_mask)

    kh = tl.arange(0, BLOCK_KVH)
    k_mask = (kh < NUM_KV_HEADS)[:, None] & j_mask[None, :]
    k1_ptrs = k_ptr + t * stride_kt + kh[:, None] * stride_kh + j[None, :]  # [BLOCK_KVH, BLOCK_HALF]
    k1 = tl.load(k1_ptrs, mask=k_mask, other=0.0)
    k2 = tl.load(k1_ptrs + HALF, mask=k_mask, other=0.0)
    if ROTATE:
        k1f = k1.to(tl.float32)
        k2f = k2.to(tl.float32)
        k1 = (k1f * cos - k2f * sin).to(k_ptr.dtype.element_ty)
        k2 = (k2f * cos + k1f * sin).to(k_ptr.dtype.element_ty)
        tl.store(k1_ptrs, k1, mask=k_mask)
        tl.store(k1_ptrs + HALF, k2, mask=k_mask)
    v1_ptrs = v_ptr + t * stride_vt + kh[:, None] * stride_vh + j[None, :]
    v1 = tl.load(v1_ptrs, mask=k_mask, other=0.0)
    v2 = tl.load(v1_ptrs + HALF, mask=k_mask, other=0.0)

    let_next_kernel_launch(USE_PDL)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:
        dst = kv_ptr + slot * stride_slot + kh[:, None] * stride_kvh + j[None, :]  # k half of the cache
        out_ty = kv_ptr.dtype.element_ty
        k_scale = 1.0
        v_scale = 1.0
        if QUANT != 0:
            k_scale = tl.load(kv_scale_ptr + kh, mask=kh < NUM_KV_HEADS, other=1.0)[:, None]  # [BLOCK_KVH, 1]
            v_scale = tl.load(kv_scale_ptr + NUM_KV_HEADS + kh, mask=kh < NUM_KV_HEADS, other=1.0)[:, None]
        tl.store(dst, _quantize(k1, k_scale, QUANT, out_ty, ROUND_FP8), mask=k_mask)
        tl.store(dst + HALF, _quantize(k2, k_scale, QUANT, out_ty, ROUND_FP8), mask=k_mask)
        tl.store(dst + stride_kv, _quantize(v1, v_scale, QUANT, out_ty, ROUND_FP8), mask=k_mask)
        tl.store(dst + stride_kv + HALF, _quantize(v2, v_scale, QUANT, out_ty, ROUND_FP8), mask=k_mask)


def rope_and_write_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos_sin: torch.Tensor | None,
                      kv_cache: torch.Tensor, slot_mapping: torch.Tensor,
                      kv_scale: torch.Tensor | None = None) -> None:
    """In place: q [T, H, D] and k [T, KVH, D] rotated by cos_sin [T, D] float32 (cos | sin halves;
    None: no rotation); then k and v [T, KVH, D] stored at slot_mapping [T] (flat slot =
    block * block_size + offset) of kv_cache [2, blocks, block_size, KVH, D]. Head dims contiguous.
    A float8_e4m3fn / int8 cache needs kv_scale [2, KVH] float32 (dequant multipliers)."""
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    assert head_dim % 2 == 0 and q.stride(2) == k.stride(2) == v.stride(2) == kv_cache.stride(4) == 1
    assert kv_cache.stride(1) == kv_cache.shape[2] * kv_cache.stride(2), "cache blocks must be dense"
    if num_tokens == 0:
        return
    rotate = cos_sin is not None
    cs = cos_sin if rotate else q  # unused pointer when not rotating
    half = head_dim // 2
    quant = kv_quant_mode(kv_cache.dtype)
    assert quant == 0 or (kv_scale is not None and kv_scale.shape == (2, num_kv_heads) and kv_scale.is_contiguous())
    _rope_kv_write_kernel[(num_tokens,)](
        q, k, v, cs, slot_mapping, kv_cache, kv_scale if quant else cs,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        cs.stride(0), kv_cache.stride(0), kv_cache.stride(2), kv_cache.stride(3),
        NUM_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads, BLOCK_H=next_pow2(num_heads),
        BLOCK_KVH=next_pow2(num_kv_heads), HALF=half, BLOCK_HALF=next_pow2(half), ROTATE=rotate, QUANT=quant,
        ROUND_FP8=interpreting(),
        num_warps=4, **launch_options(q.device, num_tokens))

"""Paged decode attention (one query token per sequence), GQA-grouped, split-KV.

Stage 1, grid (num_seqs, num_kv_heads, num_splits) (or heads first: heads_fastest): one program
owns all query heads of one KV head (padded to a 16-row tile for tl.dot) and one contiguous slice
of the sequence's keys, read through the block table; it writes its normalised partial output
and log-sum-exp. A quantized cache's values enter the dots unscaled, in float16 (the KV head's
scales multiply the scores and the output). Stage 2,
grid (num_seqs, num_heads), merges the splits. With one split, stage 1 writes the output itself.

The grid depends only on the batch size and the split count (never on sequence lengths, which
are read on the device), so a launch can be captured in a CUDA graph and replayed for any
lengths. A sequence of length 0 (a padding row) writes zeros.

KV cache of one layer: [2, num_blocks, block_size, num_kv_heads, head_dim] (k at 0, v at 1).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritium.kernels import dot_precision, interpreting, next_pow2, step_metadata_jit
from tritium.kernels.pdl import launch_options, let_next_kernel_launch, wait_for_previous_kernel
from tritium.kernels.paged_kv import attention_kv_mode, load_kv_scales, load_kv_tile, online_softmax_step, query_for_dot

BLOCK_N = 64  # keys per tile


@step_metadata_jit(ints=("stride_bt",), pointers=("kv_scale_ptr", "block_tables_ptr", "seq_lens_ptr"))
def _decode_stage1(q_ptr, kv_ptr, kv_scale_ptr, block_tables_ptr, seq_lens_ptr, out_ptr, part_o_ptr, part_lse_ptr,
                   scale_log2e,
                   stride_qs, stride_qh, stride_kv, stride_blk, stride_tok, stride_kvh, stride_bt,
                   stride_os, stride_oh,
                   GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
                   DOT_F32: tl.constexpr, PRECISION: tl.constexpr, QUANT: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
                   HEADS_FASTEST: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous_kernel(USE_PDL)
    if HEADS_FASTEST:  # a sequence's KV heads launch side by side: a token's heads are adjacent in the cache
        kv_head = tl.program_id(0)
        seq = tl.program_id(1)
    else:
        seq = tl.program_id(0)
        kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    split_len = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, seq_len)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    g_mask = g < GROUP
    d_mask = d < HEAD_DIM
    heads = kv_head * GROUP + g  # [BLOCK_G]
    q = tl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)  # [BLOCK_G, BLOCK_D]
    q = query_for_dot(q, QUANT, DOT_F32)

    k_scale, v_scale = load_kv_scales(kv_scale_ptr, kv_head, NUM_KV_HEADS, QUANT)
    score_scale = scale_log2e * k_scale  # the key scale, folded into the scores
    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        toks = n0 + tl.arange(0, BLOCK_N)  # [BLOCK_N] positions in the sequence
        t_mask = toks < end
        k, v = load_kv_tile(kv_ptr, block_tables_ptr, seq, toks, t_mask, d, d_mask, kv_head,
                            stride_kv, stride_blk, stride_tok, stride_kvh, stride_bt, BLOCK_SIZE, HEAD_DIM, QUANT,
                            DOT_F32, q.dtype)
        m, l, acc = online_softmax_step(q, k, v, t_mask[None, :], m, l, acc, score_scale, PRECISION)

    let_next_kernel_launch(USE_PDL)
    safe_l = tl.where(l > 0, l, 1.0)
    o = acc * (v_scale / safe_l)[:, None]  # the value scale, folded in; zeros for an empty split
    o_mask = g_mask[:, None] & d_mask[None, :]
    if NUM_SPLITS == 1:
        tl.store(out_ptr + seq * stride_os + heads[:, None] * stride_oh + d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=o_mask)
    else:
        # part_o: [S, H, NUM_SPLITS, BLOCK_D]; part_lse: [S, H, NUM_SPLITS] (natural log)
        num_heads = NUM_KV_HEADS * GROUP
        row = (seq * num_heads + heads) * NUM_SPLITS + split  # [BLOCK_G]
        tl.store(part_o_ptr + row[:, None] * BLOCK_D + d[None, :], o, mask=o_mask)
        lse = tl.where(l > 0, (m + tl.log2(safe_l)) * 0.6931471805599453, float("-inf"))
        tl.store(part_lse_ptr + row, lse, mask=g_mask)


@triton.jit
def _decode_stage2(part_o_ptr, part_lse_ptr, out_ptr, stride_os, stride_oh,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, NUM_SPLITS: tl.constexpr,
                   BLOCK_S: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous_kernel(USE_PDL)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    row = seq * tl.num_programs(1) + head
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    lse = tl.load(part_lse_ptr + row * NUM_SPLITS + s, mask=s < NUM_SPLITS, other=float("-inf"))  # [BLOCK_S]
    top = tl.max(lse, 0)
    top = tl.where(top == float("-inf"), 0.0, top)  # every split empty (padding row): output 0
    w = tl.exp(lse - top)  # [BLOCK_S]
    parts = tl.load(part_o_ptr + (row * NUM_SPLITS + s[:, None]) * BLOCK_D + d[None, :],
                    mask=(s[:, None] < NUM_SPLITS) & (d[None, :] < HEAD_DIM), other=0.0)  # [BLOCK_S, BLOCK_D]
    total = tl.sum(w, 0)
    o = tl.sum(parts * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq * stride_os + head * stride_oh + d, o.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)


def num_kv_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int = 132) -> int:
    """Splits per sequence: enough programs to fill the GPU twice over, each split >= 128 keys."""
    want = max(1, (2 * num_sms) // max(num_seqs * num_kv_heads, 1))
    cap = max(1, max_seq_len // 128)
    return min(next_pow2(min(want, cap)), 64)


def decode_workspace(num_seqs: int, num_heads: int, head_dim: int, num_splits: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-KV scratch (part_o [S, H, splits, BLOCK_D], part_lse [S, H, splits], float32): made
    once outside a CUDA graph or a step's layers and handed to paged_decode_attention."""
    block_d = max(next_pow2(head_dim), 16)
    return (torch.empty(num_seqs, num_heads, num_splits, block_d, dtype=torch.float32, device=device),
            torch.empty(num_seqs, num_heads, num_splits, dtype=torch.float32, device=device))


def paged_decode_attention(q: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                           seq_lens: torch.Tensor, scale: float, num_splits: int = 1,
                           out: torch.Tensor | None = None,
                           workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
                           kv_scale: torch.Tensor | None = None, block_n: int = BLOCK_N,
                           num_warps: int | None = None, num_stages: int = 2,
                           heads_fastest: bool = False) -> torch.Tensor:
    """q: [S, H, D] (D contiguous); kv_cache: [2, blocks, block_size, KVH, D]; block_tables: [S, max_blocks]
    int32; seq_lens: [S] int32 (keys per sequence, this step's included). Returns [S, H, D].
    `workspace` (decode_workspace's) may be preallocated (CUDA graphs, a step's layers). A float8_e4m3fn / int8 cache needs kv_scale [2, KVH] float32.
    block_n / num_warps / num_stages: the tile (keys a step, warps and pipeline stages a program;
    num_warps None: by cache type and splits); heads_fastest: launch order with the KV heads of a
    sequence side by side (a token's rows of all heads are adjacent in memory, so concurrent
    programs read neighbouring addresses) rather than the sequences."""
    num_seqs, num_heads, head_dim = q.shape
    _, _, block_size, num_kv_heads, kv_dim = kv_cache.shape
    assert kv_dim == head_dim and num_heads % num_kv_heads == 0, (q.shape, kv_cache.shape)
    assert q.stride(2) == 1 and kv_cache.stride(4) == 1 and block_tables.shape[0] >= num_seqs
    group = num_heads // num_kv_heads
    quant = attention_kv_mode(kv_cache, split_decode=num_splits > 1)
    assert quant == 0 or (kv_scale is not None and kv_scale.shape == (2, num_kv_heads))
    block_d = max(next_pow2(head_dim), 16)
    if num_warps is None:
        # a quantized cache's programs convert every element: with one split (large batches)
        # two warps a program ran an H200 ~30% faster than four; with several, four were as fast
        # or faster (scripts/bench_decode_attention.py)
        num_warps = 2 if quant and num_splits == 1 else 4
    pdl = launch_options(q.device, num_seqs)
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if num_splits > 1:
        part_o, part_lse = workspace or decode_workspace(num_seqs, num_heads, head_dim, num_splits, q.device)
    else:
        part_o = part_lse = out  # unused
    grid = (num_kv_heads, num_seqs, num_splits) if heads_fastest else (num_seqs, num_kv_heads, num_splits)
    _decode_stage1[grid](
        q, kv_cache, kv_scale if quant else q, block_tables, seq_lens, out, part_o, part_lse,
        scale * 1.4426950408889634,
        q.stride(0), q.stride(1), kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, BLOCK_G=max(16, next_pow2(group)), HEAD_DIM=head_dim, BLOCK_D=block_d,
        BLOCK_SIZE=block_size, BLOCK_N=block_n, NUM_SPLITS=num_splits,
        DOT_F32=interpreting(), PRECISION=dot_precision(q.dtype), QUANT=quant, NUM_KV_HEADS=num_kv_heads,
        HEADS_FASTEST=heads_fastest, num_warps=num_warps, num_stages=num_stages, **pdl)
    if num_splits > 1:
        _decode_stage2[(num_seqs, num_heads)](
            part_o, part_lse, out, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, BLOCK_D=block_d, NUM_SPLITS=num_splits, BLOCK_S=max(next_pow2(num_splits), 2),
            num_warps=4, **pdl)
    return out

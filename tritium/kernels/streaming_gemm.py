"""y = x W^T for decode-sized batches, streaming W once: W stored quantized (FP8 e4m3 or int8 with
one scale per output channel, int4 with a scale and zero per group of input channels; FP8
activations quantized in the kernel, by a static per-tensor scale or per-token scales from a small
pre-kernel), or W in 16 bits (dense_gemv, where a timed choice per shape keeps cuBLAS if faster).

At a few rows a linear layer only has to read its weight once: the kernel streams the quantized
bytes (never a dequantized copy) and multiplies each weight tile with all rows of x at once
(padded to a 16-row tensor-core tile; the padding costs no memory traffic), accumulating in
float32. Grid (cdiv(M, 16), cdiv(N, BLOCK_N), SPLIT_K): SPLIT_K programs share one output tile,
each over a slice of K, so that even a 4096-wide layer has several programs per SM in flight;
they write float32 partials that the tile's last program to finish sums (+ bias, cast), or with
TRITIUM_FUSED_SPLIT_SUM=0 a second kernel. A single row may instead
take a GEMV tile (one row a program, products accumulated element-wise in float32 on the CUDA
cores and summed once at the end: no tensor-core operand shuffles, which int4's in-register
dequantization would otherwise feed). Large batches (prefill)
dequantize once and use cuBLAS / _scaled_mm instead (the linear methods decide).

The tile shape and split are chosen per (weight kind, N, K, one row or more) by timing a few candidates the first
time a shape runs outside a CUDA-graph capture (the graph warm-up runs every decode size first);
the interpreter and a capture without a timed choice use a heuristic.

Layouts (quantization/quant_utils.py): FP8 / int8 weight [N, K] + float32 scale [N]; int4
weight_packed uint8 [N, Kp/2], scale and zero [N, Kp/G]: each group of G inputs is G/2 bytes, low
nibbles = the group's first half, high nibbles = its second half, so each nibble plane meets a
contiguous slice of x.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from tritium.kernels import dot_precision, fused_split_sum_enabled, gemm_tuning_enabled, interpreting
from tritium.kernels.act_quant import row_fp8_scales
from tritium.kernels.pdl import launch_options, let_next_kernel_launch, prefetch_to_l2, wait_for_previous_kernel
from tritium.kernels.rope_kv_write import _saturate_e4m3

logger = logging.getLogger(__name__)

BLOCK_M = 16
# Saved tile choices (tile_choices.py) are taken only from an engine timed with this version: bump
# it when the kernel or its candidates change (a choice timed against other candidates is stale).
# 2: in-kernel split-K sum by default, exponent-trick int4 candidates; 3: FP8 activations through the
# reciprocal scale, int4 one-row tiles centre nibbles before the product; 4: row blocks launch first,
# the exponent trick takes the high nibble unshifted; 5: int4 tensor-core tiles converting nibbles in
# inline PTX; 6: a 64x256 PTX int4 tile.
KERNEL_VERSION = 6
# weight kinds
FP8, INT8, INT4, DENSE = 0, 1, 2, 3
# activation handling
ACT_AS_IS, ACT_FP8_STATIC, ACT_FP8_PER_TOKEN = 0, 1, 2


@dataclass(frozen=True)
class GemvConfig:
    block_n: int
    block_k: int  # input channels per step (int4: a multiple of the group size)
    split_k: int
    num_warps: int = 4
    num_stages: int = 4
    gemv: bool = False  # one row per program, products summed on the CUDA cores (no tensor-core tile)
    int4_magic: bool = False  # int4: nibbles become floats by the exponent trick (_nibbles)
    int4_asm: bool = False  # int4 tensor-core tile: nibbles -> 16-bit (q - zero) pairs in inline PTX (_nibbles_asm)


CUBLAS = GemvConfig(0, 0, 0)  # dense_gemv's choice when cuBLAS timed faster than every tile


@triton.jit
def _nibbles(packed, zero, MAGIC: tl.constexpr):
    """Bytes (int32, 0..255) -> (low nibble - zero, high nibble - zero) in float32, exactly.
    MAGIC, the exponent trick: a nibble OR'd into the mantissa of 2^23 counts units (the low one),
    into that of 2^19 sixteenths (the high one, unshifted), so one subtraction of 2^23 + zero or
    2^19 + zero both converts and centres: logic ops and adds instead of int -> float conversions."""
    if MAGIC:
        low = ((packed & 0xF) | 0x4B000000).to(tl.float32, bitcast=True) - (zero + 8388608.0)
        high = ((packed & 0xF0) | 0x49000000).to(tl.float32, bitcast=True) - (zero + 524288.0)
    else:
        low = (packed & 0xF).to(tl.float32) - zero
        high = (packed >> 4).to(tl.float32) - zero
    return low, high


# Four packed bytes (8 nibbles) -> (low nibble - zero, high nibble - zero) of each byte as two pairs
# of 16-bit floats, in 12 instructions: bytes reordered b0 b2 b1 b3 (prmt) so that one mask
# 0x000F000F takes a nibble of two bytes into the two halves, OR'd into MAGIC (1024.0 in float16,
# 128.0 in bfloat16: there a mantissa unit is 1) by one lop3 ((a & b) | c = 0xEA), then one fma
# by 1.0 adds -(MAGIC + zero): exact, since q - zero is a small integer. $4: the bytes; $5 / $6:
# -(MAGIC + zero) for elements 0-1 / 2-3; $0 $1: the low nibbles' pairs, $2 $3: the high ones'.
_NIBBLES_PTX = """{
.reg .b32 t, s, u, w, one;
prmt.b32 t, $4, 0, 0x3120;
shr.b32 s, t, 8;
shr.b32 u, t, 4;
shr.b32 w, t, 12;
mov.b32 one, ONE;
lop3.b32 $0, t, 0x000F000F, MAGIC, 0xEA;
lop3.b32 $1, s, 0x000F000F, MAGIC, 0xEA;
lop3.b32 $2, u, 0x000F000F, MAGIC, 0xEA;
lop3.b32 $3, w, 0x000F000F, MAGIC, 0xEA;
fma.rn.TYPE $0, $0, one, $5;
fma.rn.TYPE $1, $1, one, $6;
fma.rn.TYPE $2, $2, one, $5;
fma.rn.TYPE $3, $3, one, $6;
}"""
NIBBLES_F16_PTX = tl.constexpr(
    _NIBBLES_PTX.replace("ONE", "0x3C003C00").replace("MAGIC", "0x64006400").replace("TYPE", "f16x2"))
NIBBLES_BF16_PTX = tl.constexpr(
    _NIBBLES_PTX.replace("ONE", "0x3F803F80").replace("MAGIC", "0x43004300").replace("TYPE", "bf16x2"))


@triton.jit
def _nibbles_asm(packed, zero, F16: tl.constexpr, INTERPRETED: tl.constexpr):
    """Bytes (uint8) [BLOCK_N, HALF] and zero points [BLOCK_N, 1] -> (low nibble - zero, high nibble
    - zero), exact, in float16 (F16) or bfloat16: _NIBBLES_PTX on four bytes at a time, where _nibbles
    spends several instructions a nibble. The interpreter runs no PTX: there the same values come
    from Triton's own operations (the PTX text is run by tests/kernels/test_nibbles_ptx.py)."""
    if INTERPRETED:
        low, high = _nibbles(packed.to(tl.int32), zero, False)
        ty: tl.constexpr = tl.float16 if F16 else tl.bfloat16
        return low.to(ty), high.to(ty)
    elif F16:
        neg = tl.broadcast_to((-(zero + 1024.0)).to(tl.float16), packed.shape)  # exact: 1024 + zero <= 1039
        return tl.inline_asm_elementwise(NIBBLES_F16_PTX, "=r,=r,=r,=r,r,r,r", [packed, neg],
                                         dtype=(tl.float16, tl.float16), is_pure=True, pack=4)
    else:
        neg = tl.broadcast_to((-(zero + 128.0)).to(tl.bfloat16), packed.shape)  # exact: 128 + zero <= 143
        return tl.inline_asm_elementwise(NIBBLES_BF16_PTX, "=r,=r,=r,=r,r,r,r", [packed, neg],
                                         dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)


@triton.jit
def _quant_gemv_kernel(x_ptr, w_ptr, scale_ptr, zero_ptr, x_scale_ptr, bias_ptr, y_ptr, part_ptr, arrivals_ptr,
                       M, N, K, KW, STEPS_PER_SPLIT, stride_xm, stride_wn, stride_sn, stride_ym,
                       WEIGHT: tl.constexpr, ACT: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr,
                       SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       DOT_F32: tl.constexpr, PRECISION: tl.constexpr, ROUND_FP8: tl.constexpr,
                       GEMV: tl.constexpr, ACC_K: tl.constexpr, FUSED_SUM: tl.constexpr, MAGIC: tl.constexpr,
                       ASM: tl.constexpr, USE_PDL: tl.constexpr):
    """KW: weight columns (K for FP8 / int8, Kp/2 bytes for int4). GEMV (BLOCK_M 1): products
    accumulate element-wise in an [BLOCK_N, ACC_K] float32 tile, summed over K once at the end.
    FUSED_SUM: the last split program to finish an output tile (counted in arrivals_ptr, int32 per
    tile, zero between launches) sums the tile's partials, instead of a second kernel."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # row blocks of one weight tile launch
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # side by side: its re-reads hit L2
    pid_k = tl.program_id(2)
    if USE_PDL:  # no earlier kernel writes the weights: pull this program's first two K steps into
        # L2 while the previous kernel finishes (one prefetch a 128-byte line)
        LINE: tl.constexpr = 64 if WEIGHT == 3 else 128  # elements a line (bf16 / fp16: 2 bytes)
        STEP: tl.constexpr = BLOCK_K // 2 if WEIGHT == 2 else BLOCK_K  # elements of a row a K step reads
        LINES: tl.constexpr = (2 * STEP + LINE - 1) // LINE
        first = pid_k * STEPS_PER_SPLIT * STEP + tl.arange(0, LINES) * LINE  # [LINES]
        ok = (cols < N)[:, None] & (first < tl.minimum(KW, (pid_k + 1) * STEPS_PER_SPLIT * STEP))[None, :]
        prefetch_to_l2(tl.where(ok, w_ptr + cols[:, None] * stride_wn + first[None, :], w_ptr))
    wait_for_previous_kernel(USE_PDL)
    r_mask = rows < M
    c_mask = cols < N
    if ACT == 1:
        x_scale = tl.load(x_scale_ptr)
    if ACT == 2:
        x_scale = tl.load(x_scale_ptr + rows, mask=r_mask, other=1.0)[:, None]  # [BLOCK_M, 1]
    if ACT != 0:
        # x * (1 / scale) instead of x / scale: IEEE division in the loop was ~40% of a tensor-core
        # tile's instructions (it runs on all 16 padded rows). It can differ from quantize_fp8's
        # x / scale by an ulp, so a value within an ulp of a rounding midpoint may land one FP8
        # step away (the activation rounding itself moves values by up to half a step).
        x_inv = tl.math.div_rn(tl.full(x_scale.shape, 1.0, tl.float32), x_scale)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if GEMV:
        acc2 = tl.zeros([BLOCK_N, ACC_K], tl.float32)
    for step in range(pid_k * STEPS_PER_SPLIT, (pid_k + 1) * STEPS_PER_SPLIT):
        if WEIGHT == 2:  # int4: BLOCK_K inputs = whole groups, one (scale, zero) per channel per group
            HALF: tl.constexpr = GROUP // 2
            for gi in tl.static_range(BLOCK_K // GROUP):
                g = step * (BLOCK_K // GROUP) + gi  # group index along K
                j = g * HALF + tl.arange(0, HALF)  # byte index in the row
                # a one-element tensor, not a scalar: Triton 3.9's interpreter splats a scalar int1
                # into int32, which a load's mask then rejects
                g_ok = tl.full([1], g * HALF, tl.int32) < KW
                packed = tl.load(w_ptr + cols[:, None] * stride_wn + j[None, :], mask=c_mask[:, None] & g_ok,
                                 other=0)  # [BLOCK_N, HALF] uint8
                scale = tl.load(scale_ptr + cols * stride_sn + g, mask=c_mask & g_ok, other=0.0).to(tl.float32)
                zero = tl.load(zero_ptr + cols * stride_sn + g, mask=c_mask & g_ok, other=0).to(tl.float32)
                scale, zero = scale[:, None], zero[:, None]  # [BLOCK_N, 1]
                k_lo = g * GROUP + tl.arange(0, HALF)  # input channel of the low nibble; the high one is HALF on
                x_lo = tl.load(x_ptr + rows[:, None] * stride_xm + k_lo[None, :],
                               mask=r_mask[:, None] & (k_lo < K)[None, :], other=0.0)  # [BLOCK_M, HALF]
                x_hi = tl.load(x_ptr + rows[:, None] * stride_xm + (k_lo + HALF)[None, :],
                               mask=r_mask[:, None] & (k_lo + HALF < K)[None, :], other=0.0)
                if ASM:  # (q - zero) exact in x's 16-bit type: the group's dots, then its scales
                    q_lo, q_hi = _nibbles_asm(packed, zero, x_lo.dtype == tl.float16, DOT_F32)
                    if DOT_F32:
                        x_lo, x_hi = x_lo.to(tl.float32), x_hi.to(tl.float32)
                        q_lo, q_hi = q_lo.to(tl.float32), q_hi.to(tl.float32)
                    part = tl.dot(x_lo, tl.trans(q_lo), input_precision=PRECISION)
                    part = tl.dot(x_hi, tl.trans(q_hi), part, input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
                    acc += part * tl.trans(scale)
                elif GEMV:  # x_lo, x_hi [1, HALF] broadcast over the channels: sum (q - zero) x, times the
                    packed = packed.to(tl.int32)
                    q_lo, q_hi = _nibbles(packed, zero, MAGIC)  # group's scale once a pair; [BLOCK_N, HALF]
                    acc2 += (q_lo * x_lo.to(tl.float32) + q_hi * x_hi.to(tl.float32)) * scale
                else:  # w = q scale - zero scale: one multiply-add a weight on the way to the dot
                    zs = zero * scale
                    q_lo, q_hi = _nibbles(packed.to(tl.int32), 0.0, MAGIC)
                    w_lo = (q_lo * scale - zs).to(x_lo.dtype)
                    w_hi = (q_hi * scale - zs).to(x_lo.dtype)
                    if DOT_F32:
                        x_lo, x_hi = x_lo.to(tl.float32), x_hi.to(tl.float32)
                        w_lo, w_hi = w_lo.to(tl.float32), w_hi.to(tl.float32)
                    acc += tl.dot(x_lo, tl.trans(w_lo), input_precision=PRECISION)
                    acc += tl.dot(x_hi, tl.trans(w_hi), input_precision=PRECISION)
        else:
            ks = step * BLOCK_K + tl.arange(0, BLOCK_K)
            k_mask = ks < K
            w_mask = c_mask[:, None] & k_mask[None, :]
            if WEIGHT == 1:
                w = tl.load(w_ptr + cols[:, None] * stride_wn + ks[None, :], mask=w_mask, other=0)  # int8
            else:
                w = tl.load(w_ptr + cols[:, None] * stride_wn + ks[None, :], mask=w_mask, other=0.0)  # [BN, BK]
            x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=r_mask[:, None] & k_mask[None, :],
                        other=0.0)  # [BLOCK_M, BLOCK_K]
            if ACT != 0:  # onto the FP8 grid; FP8 values are exact in float16, and FP8 -> float16 is one
                x = _saturate_e4m3(x.to(tl.float32) * x_inv, tl.float8e4nv, ROUND_FP8).to(tl.float16)  # instruction
            if GEMV:  # x [1, BLOCK_K] broadcast over the channels
                acc2 += w.to(tl.float32) * x.to(tl.float32)
            else:
                if DOT_F32:
                    x = x.to(tl.float32)
                acc += tl.dot(x, tl.trans(w.to(x.dtype)), input_precision=PRECISION)  # FP8 / int8 exact in 16 bits
    let_next_kernel_launch(USE_PDL)
    if GEMV:
        acc = tl.sum(acc2, axis=1)[None, :]  # [1, BLOCK_N]
    if WEIGHT < 2:
        acc *= tl.load(scale_ptr + cols, mask=c_mask, other=0.0)[None, :]
        if ACT != 0:
            acc *= x_scale
    out_mask = r_mask[:, None] & c_mask[None, :]
    if SPLIT:
        tl.store(part_ptr + (pid_k * M + rows[:, None]) * N + cols[None, :], acc, mask=out_mask)
        if FUSED_SUM:
            tile = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
            # release: this program's partial is visible to whoever counts after it; acquire: the
            # last one sees every partial
            arrived = tl.atomic_add(arrivals_ptr + tile, 1, sem="acq_rel")
            if arrived == tl.num_programs(2) - 1:
                acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                for s in range(tl.num_programs(2)):
                    acc += tl.load(part_ptr + (s * M + rows[:, None]) * N + cols[None, :], mask=out_mask, other=0.0,
                                   cache_modifier=".cg")  # from L2: other SMs wrote them
                if HAS_BIAS:
                    acc += tl.load(bias_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
                tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
                         mask=out_mask)
                tl.store(arrivals_ptr + tile, 0)  # zero again for the next launch (graph replays too)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _sum_splits_kernel(part_ptr, bias_ptr, y_ptr, M, N, stride_ym, SPLIT_K, HAS_BIAS: tl.constexpr,
                       BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    """y[m, n] = sum_s part[s, m, n] (+ bias[n]), one program per BLOCK outputs of a row."""
    wait_for_previous_kernel(USE_PDL)
    row = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    acc = tl.zeros([BLOCK], tl.float32)
    for s in range(SPLIT_K):  # a run-time count: one compiled variant for every split
        acc += tl.load(part_ptr + (s * M + row) * N + cols, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_ym + cols, acc.to(y_ptr.dtype.element_ty), mask=mask)


# ---- launch and tile choice ---------------------------------------------------------------------

class ChoiceKey(NamedTuple):
    """What a timed tile choice is for."""

    weight: int  # FP8, INT8, INT4 or DENSE
    act: int  # ACT_*
    n: int
    k: int
    group: int  # int4 group size, else 0
    dtype: torch.dtype  # x's
    device: torch.device
    one_row: bool


_CHOSEN: dict[ChoiceKey, GemvConfig] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    return torch.cuda.get_device_properties(device).multi_processor_count


def _split_for(n: int, k_steps: int, block_n: int, sms: int) -> int:
    """Smallest power-of-two split giving >= 2 programs per SM, each with >= 2 steps of K."""
    split = 1
    while triton.cdiv(n, block_n) * split < 2 * sms and k_steps // (split * 2) >= 2:
        split *= 2
    return split


_WEIGHT_BYTES = {FP8: 1.0, INT8: 1.0, INT4: 0.5, DENSE: 2.0}
_SMEM_BUDGET = 160 * 1024  # bytes of pipelined weight + x tiles a candidate may use (H100/H200: 227 KiB)


def _candidates(weight: int, n: int, k: int, group: int, sms: int, one_row: bool = False) -> list[GemvConfig]:
    # Few candidates: each is a compiled variant, and compiling counts in a cold start-up. The three
    # tensor-core tiles won on an H200 across Llama-3.1-8B's layer shapes (BENCHMARKS.md,
    # scripts/bench_quant_gemv.py); a single row also tries CUDA-core GEMV tiles, and int4 the
    # exponent-trick conversion (int4_magic) and the PTX one (int4_asm, tensor-core tiles) beside
    # the plain one. The PTX tiles won every int4 shape on an H200 (2026-12-01), yet reach only
    # ~1.6 TB/s on the largest: instruction issue, not memory, bounds them.
    out = []
    base = 128 if weight != INT4 else max(128, group)
    # (block_n, block_k, warps, gemv, int4 nibble conversion: "plain", "magic" or "asm")
    tiles = [(64, base, 4, False, "plain"), (32, 2 * base, 4, False, "plain"), (64, 2 * base, 8, False, "plain")]
    if weight == INT4:
        # PTX tiles: the two with the fewest instructions a weight byte compiled for sm_90 (0.295 and
        # 0.234 warp-instructions; scripts/inspect_gemv_sass.py), and 64x256, 5% faster on gate_up
        tiles += [(64, base, 4, False, "magic"), (64, base, 4, False, "asm"), (128, base, 4, False, "asm"),
                  (64, 2 * base, 4, False, "asm")]
    if one_row:
        gemv_tiles = ([(64, base, 4), (64, 2 * base, 4), (128, base, 8)] if weight == INT4 else
                      [(32, 256, 4), (64, 128, 4), (16, 512, 4)])
        tiles += [(bn, bk, warps, True, "plain") for bn, bk, warps in gemv_tiles]
        if weight == INT4:
            tiles += [(bn, bk, warps, True, "magic") for bn, bk, warps in gemv_tiles]
    for block_n, block_k, warps, gemv, convert in tiles:
        stage_bytes = block_n * block_k * _WEIGHT_BYTES[weight] + (1 if gemv else BLOCK_M) * block_k * 2
        stages = int(min(4 if not gemv else 3, _SMEM_BUDGET // stage_bytes))
        if stages >= 2:
            split = _split_for(n, triton.cdiv(k, block_k), block_n, sms)
            out.append(GemvConfig(block_n, block_k, split, num_warps=warps, num_stages=stages, gemv=gemv,
                                  int4_magic=convert == "magic", int4_asm=convert == "asm"))
    return list(dict.fromkeys(out))


def _heuristic(weight: int, n: int, k: int, group: int, sms: int) -> GemvConfig:
    block_k = 256 if weight != INT4 else max(256, group)
    if interpreting():
        block_k = 64 if weight != INT4 else group  # small tiles keep the interpreter fast
    return GemvConfig(32, block_k, _split_for(n, triton.cdiv(k, block_k), 32, sms))


def _graph_ms(fns: list[Callable[[], object]], reps: int) -> float:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            for fn in fns:
                fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def time_from_memory_ms(fn: Callable[[], object], flush: torch.Tensor, reps: int = 10) -> float:
    """GPU time of one call with its weight coming from memory, as in a decode step: replayed from a
    CUDA graph (eager launches would time Python's launch overhead), each call after a write of
    `flush`, larger than the L2 cache (less the time of those writes alone)."""
    fn()  # compiles
    return _graph_ms([flush.zero_, fn], reps) - _graph_ms([flush.zero_], reps)


def _config(key: ChoiceKey, launch: Callable[[GemvConfig], object],
            cublas: Optional[Callable[[], object]] = None) -> GemvConfig:
    """The timed choice for this shape, made now if it can be (not interpreting, not capturing).
    cublas: the alternative to time too (dense weights); CUBLAS when it wins, or when no timed
    choice can be made on a GPU. Every candidate must agree with cuBLAS (dense) or with the first
    candidate (quantized; a tensor-core tile the GPU tests check against float references)."""
    chosen = _CHOSEN.get(key)
    if chosen is not None:
        return chosen
    weight, n, k, group, device = key.weight, key.n, key.k, key.group, key.device
    sms = _sm_count(device)
    if (interpreting() or device.type != "cuda" or torch.cuda.is_current_stream_capturing()
            or not gemm_tuning_enabled()):
        return CUBLAS if cublas is not None and not interpreting() else _heuristic(weight, n, k, group, sms)
    flush = torch.empty(128 * 2**20, dtype=torch.uint8, device=device)  # > L2 (50-60 MB on Hopper); freed below
    reference = cublas() if cublas is not None else None
    atol = None  # 2% of the reference's largest value, read once
    times, failures = {}, []
    for c in _candidates(weight, n, k, group, sms, key.one_row):
        try:
            out = launch(c)  # a fresh output tensor
            if reference is None:
                reference = out
            if atol is None:
                atol = 2e-2 * float(reference.abs().max())
            if not torch.allclose(out.float(), reference.float(), rtol=2e-2, atol=atol):
                failures.append(f"{c}: result differs from the reference")  # never chosen
                continue
            times[c] = time_from_memory_ms(lambda c=c: launch(c), flush)
        except Exception as e:  # noqa: BLE001 - a tile this GPU cannot compile or hold is skipped
            failures.append(f"{c}: {type(e).__name__}: {e}")
    if failures:
        logger.warning("weight-streaming GEMM %s: %d candidate(s) skipped: %s", key, len(failures), "; ".join(failures))
    if cublas is not None:
        times[CUBLAS] = time_from_memory_ms(cublas, flush)
    del flush
    if not times:
        raise RuntimeError(f"no weight-streaming GEMM tile ran for {key}: {'; '.join(failures)}")
    chosen = min(times, key=times.get)
    logger.debug("weight-streaming GEMM %s: %s (%.1f us)", key, chosen, times[chosen] * 1e3)
    _CHOSEN[key] = chosen
    return chosen


_ARRIVALS: dict[torch.device, torch.Tensor] = {}
_MAX_TILES = 1 << 16  # output tiles of one launch: 128256 / 16 columns x 2 row blocks fit


def _arrival_counters(device: torch.device, tiles: int) -> Optional[torch.Tensor]:
    """The zeroed int32 counters of FUSED_SUM (each launch leaves them zero), made once per device
    outside a graph capture (one made during a capture would live in the graph's pool); None:
    sum the splits with the second kernel instead."""
    if tiles > _MAX_TILES:
        return None
    counters = _ARRIVALS.get(device)
    if counters is None and not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        counters = _ARRIVALS[device] = torch.zeros(_MAX_TILES, dtype=torch.int32, device=device)
    return counters


def kernel_constants(weight_kind: int, act: int, group_size: int, cfg: GemvConfig, split: int, has_bias: bool,
                     fused_sum: bool, dtype: torch.dtype) -> dict:
    """_quant_gemv_kernel's constexpr arguments for a launch (also what scripts/inspect_gemv_sass.py
    compiles offline)."""
    return dict(WEIGHT=weight_kind, ACT=act, GROUP=max(group_size, 2), HAS_BIAS=has_bias, SPLIT=split > 1,
                BLOCK_M=1 if cfg.gemv else BLOCK_M, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, DOT_F32=interpreting(),
                PRECISION=dot_precision(dtype), ROUND_FP8=interpreting(), GEMV=cfg.gemv,
                ACC_K=max(group_size, 2) // 2 if weight_kind == INT4 else cfg.block_k, FUSED_SUM=fused_sum,
                MAGIC=cfg.int4_magic and weight_kind == INT4, ASM=asm_nibbles(cfg, weight_kind, dtype))


def asm_nibbles(cfg: GemvConfig, weight_kind: int, dtype: torch.dtype) -> bool:
    """Whether a launch converts int4 nibbles in PTX (_nibbles_asm): tensor-core int4 tiles of a
    16-bit model (in the interpreter the same branch with Triton's operations for the PTX)."""
    return cfg.int4_asm and weight_kind == INT4 and not cfg.gemv and dtype in (torch.float16, torch.bfloat16)


def _launch(x: torch.Tensor, weight_kind: int, weight: torch.Tensor, scale: Optional[torch.Tensor],
            zero: Optional[torch.Tensor], group_size: int, act: int, row_scale: Optional[torch.Tensor],
            bias: Optional[torch.Tensor], cfg: GemvConfig) -> torch.Tensor:
    """One product with tile choice cfg: the streaming kernel, then the split sum when split."""
    m, k = x.shape
    n, kw = weight.shape
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    steps = triton.cdiv(kw, cfg.block_k // 2) if weight_kind == INT4 else triton.cdiv(k, cfg.block_k)
    split = max(1, min(cfg.split_k, steps))
    per_split = triton.cdiv(steps, split)
    split = triton.cdiv(steps, per_split)  # no empty splits
    part = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else y
    dummy = weight  # for pointer arguments a variant does not read
    grid = (triton.cdiv(m, 1 if cfg.gemv else BLOCK_M), triton.cdiv(n, cfg.block_n), split)
    arrivals = _arrival_counters(x.device, grid[0] * grid[1]) if split > 1 and fused_split_sum_enabled() else None
    pdl = launch_options(x.device, m)
    _quant_gemv_kernel[grid](
        x, weight, scale if scale is not None else dummy, zero if zero is not None else dummy,
        row_scale if row_scale is not None else dummy, bias if bias is not None else dummy, y, part,
        arrivals if arrivals is not None else dummy, m, n, k, kw, per_split, x.stride(0), weight.stride(0),
        scale.stride(0) if scale is not None else 0, y.stride(0),
        **kernel_constants(weight_kind, act, group_size, cfg, split, bias is not None, arrivals is not None, x.dtype),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **pdl)
    if split > 1 and arrivals is None:
        block = 256
        _sum_splits_kernel[(triton.cdiv(n, block), m)](part, bias if bias is not None else part, y, m, n,
                                                       y.stride(0), SPLIT_K=split, HAS_BIAS=bias is not None,
                                                       BLOCK=block, **pdl)
    return y


def quantized_gemv(x: torch.Tensor, weight_kind: int, weight: torch.Tensor, scale: torch.Tensor,
                   zero: Optional[torch.Tensor] = None, group_size: int = 0, act: int = ACT_AS_IS,
                   x_scale: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                   config: Optional[GemvConfig] = None) -> torch.Tensor:
    """x [M, K] (K contiguous) times the quantized weight, transposed -> [M, N] in x's dtype.

    weight_kind FP8 / INT8: weight [N, K], scale float32 [N]. INT4: weight uint8 [N, Kp/2], scale
    [N, Kp/G], zero uint8 [N, Kp/G], K <= Kp. act ACT_FP8_STATIC: x rounded onto FP8 after
    dividing by x_scale (float32 [1]); ACT_FP8_PER_TOKEN: by each row's own scale (computed here).
    config: a fixed tile choice (tests); by default timed per shape (module docstring)."""
    m, k = x.shape
    n, kw = weight.shape
    assert x.stride(1) == 1 and weight.stride(1) == 1, (x.stride(), weight.stride())
    if weight_kind == INT4:
        assert zero is not None and group_size % 32 == 0 and k <= 2 * kw and weight.dtype == torch.uint8
        assert scale.shape == zero.shape == (n, 2 * kw // group_size) and scale.stride(0) == zero.stride(0)
    else:
        assert kw == k and scale.shape == (n,) and scale.dtype == torch.float32 and scale.is_contiguous()
    row_scale = x_scale if act == ACT_FP8_STATIC else row_fp8_scales(x) if act == ACT_FP8_PER_TOKEN else None

    def launch(cfg: GemvConfig) -> torch.Tensor:
        return _launch(x, weight_kind, weight, scale, zero, group_size, act, row_scale, bias, cfg)

    if config is None:
        config = _config(ChoiceKey(weight_kind, act, n, k, group_size, x.dtype, x.device, m == 1), launch)
    return launch(config)


def dense_gemv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
               config: Optional[GemvConfig] = None) -> torch.Tensor:
    """x [M, K] @ weight [N, K]^T (+ bias), weight in x's 16-bit dtype: the streaming kernel, or
    cuBLAS where the timed choice for this shape found it faster (BENCHMARKS.md: per layer shape
    each wins somewhere at batch 1 on an H200)."""
    m, k = x.shape
    n = weight.shape[0]
    assert weight.dtype == x.dtype and weight.shape[1] == k and weight.stride(1) == 1 and x.stride(1) == 1
    if config is None:
        config = _config(ChoiceKey(DENSE, ACT_AS_IS, n, k, 0, x.dtype, x.device, m == 1),
                         lambda cfg: _launch(x, DENSE, weight, None, None, 0, ACT_AS_IS, None, bias, cfg),
                         cublas=lambda: F.linear(x, weight, bias))
    if config == CUBLAS:
        return F.linear(x, weight, bias)
    return _launch(x, DENSE, weight, None, None, 0, ACT_AS_IS, None, bias, config)


def w8a16_gemm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor] = None,
               config: Optional[GemvConfig] = None) -> torch.Tensor:
    """x [M, K] @ (weight int8 [N, K] * scale float32 [N, None])^T (+ bias [N]) -> [M, N] in x's dtype."""
    assert weight.dtype == torch.int8
    return quantized_gemv(x, INT8, weight, scale, bias=bias, config=config)


def w4a16_gemm(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
               bias: Optional[torch.Tensor] = None, config: Optional[GemvConfig] = None) -> torch.Tensor:
    """x [M, K] @ dequant(packed uint8 [N, Kp/2], scale [N, Kp/G], zero uint8 [N, Kp/G])^T (+ bias)
    -> [M, N] in x's dtype; K <= Kp (the padded inputs multiply zeros)."""
    return quantized_gemv(x, INT4, packed, scale, zero, group_size, bias=bias, config=config)


def fp8_gemv(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, x_scale: Optional[torch.Tensor],
             bias: Optional[torch.Tensor] = None, config: Optional[GemvConfig] = None) -> torch.Tensor:
    """FP8 W8A8 for a few rows: weight float8_e4m3fn [N, K], scale float32 [N]; x_scale float32 [1]
    (static per-tensor) or None (per-token scales, computed here) -> [M, N] in x's dtype."""
    assert weight.dtype == torch.float8_e4m3fn
    act = ACT_FP8_STATIC if x_scale is not None else ACT_FP8_PER_TOKEN
    return quantized_gemv(x, FP8, weight, scale, act=act, x_scale=x_scale, bias=bias, config=config)

"""Compile the paged decode attention kernel for Hopper (sm_90) without a GPU and report, for a
bf16 and an FP8 cache (read as bytes, or as 16-bit pairs), what ptxas made of it: registers, loads, and the instructions of one key
tile (its loop), per cache byte a tile reads. A planning aid between device calls, as
scripts/inspect_gemv_sass.py is for the weight-streaming GEMM.

    python scripts/inspect_attention_sass.py [--splits 64] [--warps 4] [--block-n 64]

Pointers and the strides that are multiples of 16 get the hints Triton's JIT gives them at run
time; the block table's row stride and the per-request arrays' alignment get none
(kernels.step_metadata_jit).
"""
from __future__ import annotations

import argparse
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inspect_gemv_sass import describe  # noqa: E402

from tritium.kernels import decode_attention as da  # noqa: E402

# pointer type, QUANT, bytes an element ("fp8-pairs": read as 16-bit pairs, TRITIUM_FP8_KV_PAIRS=1)
_CACHES = {"bf16": ("*bf16", 0, 2), "fp8": ("*fp8e4nv", 1, 1), "fp8-pairs": ("*fp8e4nv", 3, 1)}
_ALIGNED = ("q_ptr", "kv_ptr", "out_ptr", "part_o_ptr", "part_lse_ptr", "stride_qs", "stride_qh", "stride_kv",
            "stride_blk", "stride_tok", "stride_kvh", "stride_os", "stride_oh")


def compile_decode(cache: str, splits: int, warps: int, block_n: int, stages: int, pdl: bool,
                   group: int = 4, kv_heads: int = 8, head_dim: int = 128, block_size: int = 16):
    kv_type, quant, _ = _CACHES[cache]
    kernel = da._decode_stage1
    names = kernel.arg_names
    constants = dict(GROUP=group, BLOCK_G=max(16, group), HEAD_DIM=head_dim, BLOCK_D=head_dim, BLOCK_SIZE=block_size,
                     BLOCK_N=block_n, NUM_SPLITS=splits, DOT_F32=False, PRECISION="tf32", QUANT=quant,
                     NUM_KV_HEADS=kv_heads, HEADS_FASTEST=False, USE_PDL=pdl)
    pointers = {"q_ptr": "*bf16", "kv_ptr": kv_type, "kv_scale_ptr": "*fp32", "block_tables_ptr": "*i32",
                "seq_lens_ptr": "*i32", "out_ptr": "*bf16", "part_o_ptr": "*fp32", "part_lse_ptr": "*fp32"}
    signature = {n: "constexpr" if n in constants else pointers.get(n, "fp32" if n == "scale_log2e" else "i32")
                 for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in _ALIGNED}
    constexprs = {(names.index(n),): v for n, v in constants.items()}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", type=int, default=64, help="KV splits (batch 1 of an 8-KV-head model: 64)")
    ap.add_argument("--warps", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--block-n", type=int, nargs="+", default=[64])
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--pdl", action="store_true", help="compile with programmatic dependent launch (batch 1)")
    args = ap.parse_args()
    for cache, (_, _, elem) in _CACHES.items():
        for warps in args.warps:
            for block_n in args.block_n:
                compiled = compile_decode(cache, args.splits, warps, block_n, args.stages, args.pdl)
                text = describe(compiled.asm["cubin"])
                loop = int(text.split("K loop ")[1].split()[0])
                tile_bytes = 2 * block_n * 128 * elem  # k and v of one KV head
                print(f"{cache} cache, {warps} warps, {block_n} keys a tile: {text}; "
                      f"{loop * warps / tile_bytes:.3f} warp-instr / cache byte", flush=True)


if __name__ == "__main__":
    main()

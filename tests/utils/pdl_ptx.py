"""Compiles the decode path's kernels for Hopper (sm_90) without a GPU (Triton's bundled LLVM and
ptxas) with and without programmatic dependent launch, and prints, per kernel, where the
griddepcontrol instructions sit in the PTX relative to its global memory accesses (JSON).
Run as a subprocess (`python -m tests.utils.pdl_ptx`): the kernel tests' process runs Triton's
interpreter, which cannot compile.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tritium.kernels import decode_attention, rmsnorm, rope_kv_write, silu_mul, streaming_gemm  # noqa: E402

MEMORY_OPS = ("ld.global", "st.global", "atom.global", "red.global", "cp.async")

# kernel: (constexprs, pointer types different from *bf16, float scalars)
KERNELS = {
    "rmsnorm": (rmsnorm._rmsnorm_kernel, dict(N=4096, BLOCK=4096, HAS_RESIDUAL=True), {}, ("eps",)),
    "silu_mul": (silu_mul._silu_mul_kernel, dict(N=14336, BLOCK=1024), {}, ()),
    "rope_kv_write": (rope_kv_write._rope_kv_write_kernel,
                      dict(NUM_HEADS=32, NUM_KV_HEADS=8, BLOCK_H=32, BLOCK_KVH=8, HALF=64, BLOCK_HALF=64, ROTATE=True,
                           QUANT=1, ROUND_FP8=False),
                      {"cos_sin_ptr": "*fp32", "slot_ptr": "*i64", "kv_ptr": "*fp8e4nv", "kv_scale_ptr": "*fp32"}, ()),
    "decode_stage1": (decode_attention._decode_stage1,
                      dict(GROUP=4, BLOCK_G=16, HEAD_DIM=128, BLOCK_D=128, BLOCK_SIZE=16, BLOCK_N=64, NUM_SPLITS=4,
                           DOT_F32=False, PRECISION="tf32", QUANT=1, NUM_KV_HEADS=8, HEADS_FASTEST=False),
                      {"kv_ptr": "*fp8e4nv", "kv_scale_ptr": "*fp32", "block_tables_ptr": "*i32",
                       "seq_lens_ptr": "*i32", "part_o_ptr": "*fp32", "part_lse_ptr": "*fp32"}, ("scale_log2e",)),
    "decode_stage2": (decode_attention._decode_stage2, dict(HEAD_DIM=128, BLOCK_D=128, NUM_SPLITS=4, BLOCK_S=4),
                      {"part_o_ptr": "*fp32", "part_lse_ptr": "*fp32"}, ()),
    "sum_splits": (streaming_gemm._sum_splits_kernel, dict(HAS_BIAS=False, BLOCK=256), {"part_ptr": "*fp32"}, ()),
}


def compile_ptx(kernel, constexprs: dict, pointer_types: dict, floats: tuple, use_pdl: bool) -> str:
    names = kernel.arg_names
    constexprs = dict(constexprs, USE_PDL=use_pdl)
    signature = {n: "constexpr" if n in constexprs else pointer_types.get(n, "*bf16") if n.endswith("_ptr")
                 else "fp32" if n in floats else "i32" for n in names}
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(names.index(n),): v for n, v in constexprs.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4)).asm["ptx"]


def gemv_ptx(use_pdl: bool) -> str:
    """The FP8 one-row weight-streaming GEMV with the in-kernel split-K sum (the batch-1 decode tile)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
    from inspect_gemv_sass import compile_candidate

    cfg = next(c for c in streaming_gemm._candidates(streaming_gemm.FP8, 4096, 4096, 128, 132, one_row=True)
               if c.split_k > 1)
    return compile_candidate("fp8", cfg, 128, use_pdl).asm["ptx"]


def facts(ptx: str) -> dict:
    """Line numbers of the first griddepcontrol.wait / launch_dependents and of the first global
    memory access (None where absent)."""
    lines = ptx.splitlines()

    def first(pred):
        return next((i for i, line in enumerate(lines) if pred(line.strip())), None)
    return {"wait": first(lambda s: s.startswith("griddepcontrol.wait")),
            "launch": first(lambda s: s.startswith("griddepcontrol.launch_dependents")),
            "memory": first(lambda s: any(op in s.split(";")[0] for op in MEMORY_OPS) and not s.startswith("//"))}


def main() -> None:
    out = {}
    for use_pdl in (False, True):
        for name, (kernel, constexprs, pointers, floats) in KERNELS.items():
            out[f"{name} pdl={use_pdl}"] = facts(compile_ptx(kernel, constexprs, pointers, floats, use_pdl))
        out[f"fp8_gemv pdl={use_pdl}"] = facts(gemv_ptx(use_pdl))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

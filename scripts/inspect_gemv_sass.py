"""Compile the weight-streaming GEMM's candidates for Hopper (sm_90) on a machine without a GPU and
report what ptxas made of each: registers, spills (stack), shared memory, the load
instructions (cp.async LDGSTS: software-pipelined through shared memory; plain LDG: not), and
the instructions of one K step (a warp issues one a cycle per scheduler: per weight byte, a bound
on bandwidth next to the memory's).
A planning aid between device calls: a candidate that spills or never pipelines its weight loads
is worth fixing before it is timed.

    python scripts/inspect_gemv_sass.py --weight int4 --n 4096 --k 14336 [--rows many]

Pointers and the sizes / strides that are multiples of 16 get the divisibility hints Triton's JIT
gives them at run time (without them the loads compile to single bytes, which the GPU never runs).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from tritium.kernels import streaming_gemm as sg

_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
_WEIGHTS = {"fp8": (sg.FP8, "*fp8e4nv", sg.ACT_FP8_STATIC), "int8": (sg.INT8, "*i8", sg.ACT_AS_IS),
            "int4": (sg.INT4, "*u8", sg.ACT_AS_IS), "bf16": (sg.DENSE, "*bf16", sg.ACT_AS_IS)}
_MULTIPLES_OF_16 = ("N", "K", "KW", "stride_xm", "stride_wn", "stride_sn", "stride_ym")


def compile_candidate(weight: str, cfg: sg.GemvConfig, group: int, pdl: bool = False, one_row: bool = False):
    kind, w_type, act = _WEIGHTS[weight]
    kernel = sg._quant_gemv_kernel
    names = kernel.arg_names
    constants = sg.kernel_constants(kind, act, group if kind == sg.INT4 else 0, cfg, cfg.split_k, has_bias=False,
                                    fused_sum=cfg.split_k > 1, dtype=torch.bfloat16)
    constants["USE_PDL"] = pdl
    if one_row:  # Triton's JIT specialises an integer argument equal to 1 into a constant
        constants["M"] = 1
    pointers = {"x_ptr": "*bf16", "w_ptr": w_type, "scale_ptr": "*bf16" if kind == sg.INT4 else "*fp32",
                "zero_ptr": "*u8", "x_scale_ptr": "*fp32", "bias_ptr": "*bf16", "y_ptr": "*bf16",
                "part_ptr": "*fp32", "arrivals_ptr": "*i32"}
    signature = {n: "constexpr" if n in constants else pointers.get(n, "i32") for n in names}
    hinted = [n for n in names if n in pointers or n in _MULTIPLES_OF_16]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in hinted}
    constexprs = {(names.index(n),): v for n, v in constants.items()}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))


def main_loop(sass: str) -> collections.Counter:
    """Opcodes of the largest loop (a backward branch and what it jumps over): the K loop."""
    code = [(int(m[1], 16), m[2]) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best: list[str] = []
    for addr, text in code:
        target = re.search(r"\bBRA\s+0x([0-9a-f]+)", text)
        if target and int(target[1], 16) < addr:
            body = [t for a, t in code if int(target[1], 16) <= a <= addr]
            best = max(best, body, key=len)
    return collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in best)


def describe(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([os.path.join(_BIN, "cuobjdump"), "--dump-resource-usage", f.name],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([os.path.join(_BIN, "cuobjdump"), "-sass", f.name],
                              capture_output=True, text=True, check=True).stdout
    resources = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", usage)
    loads = collections.Counter(re.findall(r"\b(LDGSTS|LDG)((?:\.[A-Z0-9_]+)*)\s", sass))
    load_text = ", ".join(f"{op}{width} x{n}" for (op, width), n in sorted(loads.items()))
    loop = main_loop(sass)
    top = ", ".join(f"{op} {n}" for op, n in loop.most_common(6))
    return (f"regs {resources[1]}, stack {resources[2]} B, shared {resources[3]} B; loads: {load_text}; "
            f"K loop {sum(loop.values())} instructions ({top})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weight", choices=sorted(_WEIGHTS), default="int4")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--k", type=int, default=14336)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--rows", choices=("one", "many"), default="one", help="one row (GEMV candidates too) or more")
    ap.add_argument("--pdl", action="store_true", help="compile with programmatic dependent launch")
    ap.add_argument("--sms", type=int, default=132, help="SM count the split-K heuristic plans for (H200: 132)")
    args = ap.parse_args()
    kind = _WEIGHTS[args.weight][0]
    for cfg in sg._candidates(kind, args.n, args.k, args.group, args.sms, one_row=args.rows == "one"):
        compiled = compile_candidate(args.weight, cfg, args.group, args.pdl, one_row=args.rows == "one")
        print(f"{cfg}: {describe(compiled.asm['cubin'])}", flush=True)


if __name__ == "__main__":
    main()

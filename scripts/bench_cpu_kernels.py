"""Time of the CPU matmul kernels layers/cpu_linear.py chooses between, on SmolLM2-135M's shapes.

    python scripts/bench_cpu_kernels.py [--rows 1 4 16 64]

One "step" = the 30 decoder layers' four linears (qkv, o, gate_up, down) plus the LM head, each
with its own random weight (135M parameters: they stream from memory as in a real decode step),
for an input of --rows rows. Best of 5, in ms. Run it with
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2` to see what an
AVX2-only CPU gets.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from tritium.config import cpu_capability, cpu_has_native_bf16
from tritium.layers import cpu_linear

HIDDEN, INTERMEDIATE, VOCAB, LAYERS = 576, 1536, 49152, 30
SHAPES = [(960, HIDDEN), (HIDDEN, HIDDEN), (2 * INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)] * LAYERS + [(VOCAB, HIDDEN)]


def step_ms(fn, weights, rows: int, dtype: torch.dtype, reps: int = 5) -> float:
    xs = {k: torch.randn(rows, k, dtype=dtype) for k in {s[1] for s in SHAPES}}
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for (_, k), w in zip(SHAPES, weights):
            fn(xs[k], w)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64])
    args = ap.parse_args()
    print(f"torch dispatch {cpu_capability()}, native bf16 {cpu_has_native_bf16()}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    w32 = [torch.randn(s) / s[1] ** 0.5 for s in SHAPES]
    w16 = [w.bfloat16() for w in w32]
    kernels = {
        "float32 F.linear": (lambda x, w: F.linear(x, w), w32, torch.float32),
        "float32 oneDNN packed": (lambda x, w: cpu_linear.packed_linear(x, w, None),
                                  [cpu_linear.pack_weight(w, torch.float32).tensor for w in w32], torch.float32),
        "bf16 ATen (gemv at 1 row)": (lambda x, w: cpu_linear.aten_gemv(x, w, None), w16, torch.bfloat16),
        "bf16 -> float32 per call, F.linear": (lambda x, w: F.linear(x.float(), w.float()).bfloat16(), w16,
                                               torch.bfloat16),
        "bf16 -> float32 oneDNN copy": (lambda x, w: cpu_linear.packed_linear(x.float(), w, None).bfloat16(),
                                        [cpu_linear.pack_weight(w, torch.float32).tensor for w in w16], torch.bfloat16),
    }
    if cpu_has_native_bf16():
        kernels["bf16 oneDNN packed"] = (lambda x, w: cpu_linear.packed_linear(x, w, None),
                                         [cpu_linear.pack_weight(w, torch.bfloat16).tensor for w in w16], torch.bfloat16)
    print(f"{'kernel':32}" + "".join(f"{f'{m} rows':>10}" for m in args.rows))
    for name, (fn, weights, dtype) in kernels.items():
        print(f"{name:32}" + "".join(f"{step_ms(fn, weights, m, dtype):10.1f}" for m in args.rows), flush=True)


if __name__ == "__main__":
    main()

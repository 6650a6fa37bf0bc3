"""Decode-sized linears of Llama-3.1-8B on one GPU: bf16 cuBLAS against the weight-streaming
kernels over quantized weights (kernels/streaming_gemm.py) and torch._scaled_mm, per layer
shape and row count; prints time and the weight bytes' effective bandwidth.

    python3 scripts/bench_quant_gemv.py [--rows 1 4 16]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from tritium.kernels import streaming_gemm as wog
from tritium.quantization.quant_utils import quantize_fp8_per_row, quantize_int4, quantize_int8_per_row

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
          "lm_head": (128256, 4096)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--candidates", action="store_true", help="also time every candidate tile at 1 row")
    ap.add_argument("--layers", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--kinds", nargs="+", default=["bf16", "int8", "int4", "fp8"], help="candidate tiles of these kinds")
    ap.add_argument("--int4-tiles", action="store_true",
                    help="also time int4 PTX-conversion tiles outside the candidate list (other shapes and splits)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    flush = torch.empty(128 * 2**20, dtype=torch.uint8, device=dev)  # evicts the L2 cache between calls
    print(f"{'layer':8} {'rows':>4} {'method':28} {'us':>8} {'GB/s':>7}  choice")
    for name in args.layers:
        n, k = SHAPES[name]
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
        q8, s8 = quantize_int8_per_row(w)
        f8, sf8 = quantize_fp8_per_row(w)
        p4, s4, z4 = quantize_int4(w, 128, scale_dtype=torch.bfloat16)
        one = torch.ones((), device=dev)
        x_scale = torch.full((1,), 0.01, device=dev)
        for m in args.rows:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            xf8 = (x / 0.01).clamp(-448, 448).to(torch.float8_e4m3fn)
            runs = {  # method: (call, weight bytes, the kernel's tile-choice key prefix)
                "bf16 cuBLAS": (lambda: F.linear(x, w), 2 * n * k, None),
                "bf16 dense_gemv (timed choice)": (lambda: wog.dense_gemv(x, w), 2 * n * k, (wog.DENSE, wog.ACT_AS_IS)),
                "int8 stream (W8A16)": (lambda: wog.w8a16_gemm(x, q8, s8), n * k, (wog.INT8, wog.ACT_AS_IS)),
                "int4 g128 stream (W4A16)": (lambda: wog.w4a16_gemm(x, p4, s4, z4, 128), n * k // 2,
                                             (wog.INT4, wog.ACT_AS_IS)),
                "fp8 stream static (FP8)": (lambda: wog.fp8_gemv(x, f8, sf8, x_scale), n * k,
                                            (wog.FP8, wog.ACT_FP8_STATIC)),
                "fp8 stream per-token": (lambda: wog.fp8_gemv(x, f8, sf8, None), n * k,
                                         (wog.FP8, wog.ACT_FP8_PER_TOKEN)),
                "fp8 _scaled_mm (no x quant)": (lambda: torch._scaled_mm(xf8, f8.t(), scale_a=one, scale_b=one,
                                                                        out_dtype=torch.bfloat16), n * k, None),
            }
            for method, (fn, nbytes, kind) in runs.items():
                us = wog.time_from_memory_ms(fn, flush) * 1e3
                chosen = [c for key, c in wog._CHOSEN.items() if kind is not None and key[:4] == (*kind, n, k)
                          and key[-1] == (m == 1)]  # the key ends with "one row"
                print(f"{name:8} {m:4d} {method:28} {us:8.1f} {nbytes / us / 1e3:7.0f}  {chosen[0] if chosen else ''}")
            if args.candidates and m == 1:
                _time_candidates(name, n, k, x, w, q8, s8, p4, s4, z4, f8, sf8, x_scale, flush, args.kinds,
                                 args.int4_tiles)


def _time_candidates(name, n, k, x, w, q8, s8, p4, s4, z4, f8, sf8, x_scale, flush, kinds_wanted,
                     int4_tiles) -> None:
    """Every candidate tile of each weight kind, so that the candidate list can be judged."""
    sms = wog._sm_count(x.device)
    kinds = {"bf16": (wog.DENSE, 0, 2 * n * k, lambda c: wog.dense_gemv(x, w, config=c)),
             "int8": (wog.INT8, 0, n * k, lambda c: wog.w8a16_gemm(x, q8, s8, config=c)),
             "int4": (wog.INT4, 128, n * k // 2, lambda c: wog.w4a16_gemm(x, p4, s4, z4, 128, config=c)),
             "fp8": (wog.FP8, 0, n * k, lambda c: wog.fp8_gemv(x, f8, sf8, x_scale, config=c))}
    for kind, (weight, group, nbytes, call) in kinds.items():
        if kind not in kinds_wanted:
            continue
        configs = wog._candidates(weight, n, k, group, sms, one_row=True)
        if kind == "int4" and int4_tiles:  # (block_n, block_k, warps, stages) at the usual split, half and double it
            for bn, bk, warps, stages in ((32, 128, 4, 4), (64, 256, 4, 3), (128, 128, 8, 4), (128, 256, 8, 3),
                                          (256, 128, 8, 3)):
                split = wog._split_for(n, -(-k // bk), bn, sms)
                configs += [wog.GemvConfig(bn, bk, s, num_warps=warps, num_stages=stages, int4_asm=True)
                            for s in dict.fromkeys((max(1, split // 2), split, split * 2))]
        for c in configs:
            try:
                us = wog.time_from_memory_ms(lambda c=c: call(c), flush) * 1e3
                print(f"  {name:8} {kind:5} {c}  {us:8.1f} us {nbytes / us / 1e3:6.0f} GB/s")
            except Exception as e:  # noqa: BLE001 - a tile that does not fit is reported, not fatal
                print(f"  {name:8} {kind:5} {c}  failed: {type(e).__name__}: {str(e)[:100]}")

if __name__ == "__main__":
    main()

"""Triton kernels, one purpose each; every one has a torch reference its test compares against.

On a CUDA device they run compiled; on the CPU their tests run them in Triton's interpreter
(TRITON_INTERPRET=1, set before this package is imported). Nothing here is imported on the
CPU inference path.
"""
from __future__ import annotations

import functools
import os


def interpreting() -> bool:
    """Whether Triton runs kernels in its (CPU, numpy) interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def dot_precision(dtype) -> str:
    """tl.dot input precision: exact float32 products for float32 models (Triton's default would
    round them to tf32), the default for 16-bit inputs."""
    import torch

    return "ieee" if dtype == torch.float32 else "tf32"


def kv_quant_mode(dtype) -> int:
    """How kernels treat a KV cache of `dtype`: 0 as is, 1 FP8 e4m3 with scales, 2 int8 with scales."""
    import torch

    return {torch.float8_e4m3fn: 1, torch.int8: 2}.get(dtype, 0)


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def use_triton(x) -> bool:
    """Whether layers should run their Triton kernel for tensor `x`: on CUDA, with Triton
    installed, unless TRITIUM_TRITON=0 (the torch reference ops then run, for debugging)."""
    return x.is_cuda and os.environ.get("TRITIUM_TRITON", "1") != "0" and triton_available()


def skinny_gemm_rows() -> int:
    """Linears with at most this many rows use the weight-streaming Triton kernel on a GPU
    (TRITIUM_SKINNY_GEMM_ROWS). Off by default: on an H200 it streams Llama-3.1-8B's decode
    weights no faster than cuBLAS (4.01 vs 3.97 ms a step) and batch-1 decode measured 174 vs
    207 tok/s (BENCHMARKS.md); it is the base for the quantized weight-only kernels."""
    return int(os.environ.get("TRITIUM_SKINNY_GEMM_ROWS", "0"))


def gpu_linear(x, weight, bias):
    """y = x W^T + b on a GPU: the skinny kernel for a few rows, cuBLAS otherwise."""
    import torch.nn.functional as F

    if x.dim() == 2 and x.shape[0] <= skinny_gemm_rows() and use_triton(x) and weight.stride(-1) == 1:
        from tritium.kernels.skinny_gemm import skinny_gemm

        return skinny_gemm(x, weight, bias)
    return F.linear(x, weight, bias)

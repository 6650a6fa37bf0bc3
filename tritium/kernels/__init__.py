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


def step_metadata_jit(ints: tuple[str, ...] = (), pointers: tuple[str, ...] = ()):
    """triton.jit for a kernel that reads a step's metadata: `ints` (the block table's row stride,
    which follows the step's longest request) are not specialised on their value (1, divisible by
    16), `pointers` (per-request arrays, sliced where a mixed step's prompts begin) not on their
    16-byte alignment. Each new combination would otherwise compile the kernel again while serving
    (0.5-0.9 s each on an H200: an FP8 offline run on a fresh machine had 11 such steps)."""
    import inspect

    import triton

    kwargs = {"do_not_specialize": list(ints)}
    if "do_not_specialize_on_alignment" in inspect.signature(triton.jit).parameters:  # Triton >= 3.2
        kwargs["do_not_specialize_on_alignment"] = list(pointers)
    return triton.jit(**kwargs)


def use_triton(x) -> bool:
    """Whether layers should run their Triton kernel for tensor `x`: on CUDA, with Triton
    installed, unless TRITIUM_TRITON=0 (the torch reference ops then run, for debugging)."""
    return x.is_cuda and os.environ.get("TRITIUM_TRITON", "1") != "0" and triton_available()


# Rows up to which a 16-bit linear may run the weight-streaming kernel (streaming_gemm.dense_gemv),
# which times itself against cuBLAS per layer shape and keeps the faster.
STREAMING_GEMM_MAX_ROWS = 16


def streaming_gemm_enabled() -> bool:
    """TRITIUM_STREAMING_GEMM=0 keeps every 16-bit linear on cuBLAS (for A/B measurements)."""
    return os.environ.get("TRITIUM_STREAMING_GEMM", "1") != "0"


def fused_split_sum_enabled() -> bool:
    """A split weight-streaming GEMM sums its partials in its last program per tile instead of a
    second kernel (batch-1 decode on an H200: FP8 286.7 -> 292.8, W4A16 248.2 -> 250.0 tok/s);
    TRITIUM_FUSED_SPLIT_SUM=0 keeps the second kernel (A/B)."""
    return os.environ.get("TRITIUM_FUSED_SPLIT_SUM", "1") != "0"


def mixed_decode_split_enabled() -> bool:
    """A step with prompt tokens runs its leading one-token requests through the decode attention
    kernel (one 500-decode + 8-prompt layer on an H200: 8.4 -> 1.2 ms over an FP8 cache);
    TRITIUM_MIXED_DECODE_SPLIT=0 runs the whole step through the prefill kernel (A/B)."""
    return os.environ.get("TRITIUM_MIXED_DECODE_SPLIT", "1") != "0"


def gemm_tuning_enabled() -> bool:
    """TRITIUM_GEMM_TUNING=0: the streaming GEMM takes fixed tiles (cuBLAS for 16-bit weights)
    instead of compiling and timing candidates at first use (tests that do not measure speed)."""
    return os.environ.get("TRITIUM_GEMM_TUNING", "1") != "0"


def gpu_linear(x, weight, bias):
    """y = x W^T + b on a GPU: for a few rows the faster of the streaming kernel and cuBLAS for
    this shape (timed once), cuBLAS otherwise."""
    import torch.nn.functional as F

    if (x.dim() == 2 and x.shape[0] <= STREAMING_GEMM_MAX_ROWS and use_triton(x) and streaming_gemm_enabled()
            and weight.dtype == x.dtype and weight.stride(-1) == 1 and x.stride(-1) == 1):
        from tritium.kernels.streaming_gemm import dense_gemv

        return dense_gemv(x, weight, bias)
    return F.linear(x, weight, bias)

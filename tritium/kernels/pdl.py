"""Programmatic dependent launch (Hopper and later): on by default for small launches only.

A kernel launched with it may be scheduled while the kernel before it in the stream is still
running: its programs wait (griddepcontrol.wait) until that kernel has finished and its writes
are visible, so only the launch and the programs' scheduling overlap the previous kernel's tail,
never a read or write of memory the previous kernel touches. Each kernel of the decode path
waits first thing (before any load or store, even of inputs it could read early) and lets the
next one launch (griddepcontrol.launch_dependents) once its main loop is done; the
weight-streaming GEMM first prefetches its first weight tiles into L2 (weights are no kernel's
output), so its loads start during the previous kernel's tail. Waiting is a no-op
in a kernel launched without it. CUDA graphs captured from such launches keep the dependency.

When: by default only for launches over at most PDL_AUTO_MAX_ROWS rows (tokens or sequences):
on an H200 batch-1 decode gained 1-5% with it (bf16 213.6 -> 216.4 tok/s, FP8 306.6 -> 321.0,
W4A16 262.9 -> 270.4), while an FP8 offline run at 2048 requests a step lost ~23% (one run;
BENCHMARKS.md, seventh session). TRITIUM_PDL=1 turns it on for every launch, 0 off.
"""
from __future__ import annotations

import functools
import os

import triton
import triton.language as tl
import triton.language.extra.cuda  # noqa: F401  (tl.extra.cuda in the jit functions)

from tritium.kernels import STREAMING_GEMM_MAX_ROWS, interpreting


@functools.lru_cache(maxsize=None)
def _device_supports(index: int) -> bool:
    """Hopper or later, and a Triton that can launch with it (launch_pdl and the griddepcontrol
    intrinsics: older releases the package allows have neither)."""
    import torch

    return torch.cuda.get_device_capability(index)[0] >= 9 and _triton_supports()


def _triton_supports() -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    cuda = tl.extra.cuda
    return ("launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})
            and hasattr(cuda, "gdc_wait") and hasattr(cuda, "gdc_launch_dependents"))


# the weight-streaming regime, where a decode step is short and its kernels' launch gaps and
# tails are a visible share of it
PDL_AUTO_MAX_ROWS = STREAMING_GEMM_MAX_ROWS


def pdl_enabled(device, rows: int) -> bool:
    """Whether a launch over `rows` rows (tokens or sequences) on `device` (a torch.device) uses
    programmatic dependent launch: TRITIUM_PDL=1 always, 0 never, unset only up to PDL_AUTO_MAX_ROWS."""
    mode = os.environ.get("TRITIUM_PDL", "auto")
    if mode == "0" or (mode != "1" and rows > PDL_AUTO_MAX_ROWS) or interpreting() or device.type != "cuda":
        return False
    return _device_supports(device.index if device.index is not None else 0)


def launch_options(device, rows: int) -> dict:
    """The keyword arguments a kernel launch over `rows` rows on `device` adds: the USE_PDL
    constexpr, and Triton's launch_pdl when on (left out when off: the interpreter does not know it)."""
    on = pdl_enabled(device, rows)
    return {"USE_PDL": on, "launch_pdl": True} if on else {"USE_PDL": False}


@triton.jit
def wait_for_previous_kernel(USE_PDL: tl.constexpr):
    """Call before a kernel's first load or store."""
    if USE_PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def prefetch_to_l2(ptrs):
    """Start pulling the 128-byte lines at `ptrs` into L2 (a hint: no value, no fault on the
    pointers given): memory no earlier kernel writes (weights) can be fetched before
    wait_for_previous_kernel, while the previous kernel finishes."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def let_next_kernel_launch(USE_PDL: tl.constexpr):
    """Call once the main loop is done: the next kernel's programs may be scheduled (they wait)."""
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()

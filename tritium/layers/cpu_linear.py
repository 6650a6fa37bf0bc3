"""Fast y = x W^T + b on CPU: oneDNN (mkldnn) prepacked weights, and ATen's gemv for one bf16 row.

F.linear on a plain [out, in] weight makes oneDNN re-lay the weight out on every call; packing it
once after loading (into oneDNN's blocked layout) and calling `_linear_pointwise` halves the
float32 matmul time of a decode step and cuts bfloat16's by ~40% (SmolLM2-135M, 2 AVX-512 cores).
For a single bfloat16 row ATen's own gemv is faster still (it streams the plain weight once,
accumulating in float32: 9 ms a step against oneDNN's 12 ms), so layers keep the plain weight
too (which also keeps parameters ordinary tensors) and pay twice the weight memory.
Elsewhere (CUDA, float16, builds without mkldnn, or TRITIUM_CPU_PACK=0) there is no packed copy
and `linear` is F.linear.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

import torch
import torch.nn.functional as F

# oneDNN picks its blocked layout for this many rows; the packed weight serves any row count,
# and 32 is within a few percent of the best layout from 1 to 64 rows.
PACK_BATCH_HINT = 32

_mkldnn_flag_lock = threading.Lock()


def can_pack(weight: torch.Tensor) -> bool:
    """Whether `weight` ([out, in]) can be prepacked for oneDNN on this machine."""
    if os.environ.get("TRITIUM_CPU_PACK", "1") == "0":
        return False
    if weight.device.type != "cpu" or weight.dim() != 2 or weight.dtype not in (torch.float32, torch.bfloat16):
        return False
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    return weight.dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """[out, in] plain -> the same weight in oneDNN's opaque layout (a tensor with is_mkldnn)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_BATCH_HINT)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    # x: [..., in] -> [..., out], in x's dtype (float32 accumulation inside oneDNN)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def aten_gemv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """F.linear through ATen's gemv: while mkldnn is enabled, bf16 matmuls go to oneDNN, and the
    switch is process-wide, so it is turned off around this call only (locked, so concurrent
    callers restore it correctly; another thread's bf16 matmul meanwhile merely takes ATen's path)."""
    with _mkldnn_flag_lock:
        enabled = torch._C._get_mkldnn_enabled()
        torch._C._set_mkldnn_enabled(False)
        try:
            return F.linear(x, weight, bias)
        finally:
            torch._C._set_mkldnn_enabled(enabled)


def linear(x: torch.Tensor, weight: torch.Tensor, packed: Optional[torch.Tensor],
           bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x: [..., in] -> [..., out] with the fastest CPU kernel; `packed` is pack_weight(weight) or None."""
    if packed is None:
        return F.linear(x, weight, bias)
    if x.dtype == torch.bfloat16 and x.numel() == x.shape[-1]:  # one row
        return aten_gemv(x, weight, bias)
    return packed_linear(x, packed, bias)

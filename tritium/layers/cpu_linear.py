"""Fast y = x W^T + b on CPU: oneDNN (mkldnn) prepacked weights, and ATen's gemv for one bf16 row.

F.linear on a plain [out, in] weight makes oneDNN re-lay the weight out on every call; a packed
copy (oneDNN's blocked layout) and `_linear_pointwise` halve the float32 matmul time of a decode
step and cut bfloat16's by ~40% (SmolLM2-135M, 2 AVX-512 cores). For a single bfloat16 row ATen's
own gemv is faster still (it streams the plain bf16 weight once, accumulating in float32: 9 ms a
step against oneDNN's 12 ms, and 25 ms for a float32 weight), so layers keep the plain weight too
(which also keeps parameters ordinary tensors).

The packed copy's dtype depends on the CPU (`packed_dtype`):
  float32 weight                       -> float32 copy
  bfloat16 weight, native bf16 CPU     -> bfloat16 copy (AVX512_BF16 / AMX dot products)
  bfloat16 weight, AVX2-only CPU       -> float32 copy of the same values: oneDNN has no fast
                                          bf16 kernel there, and ATen's bf16 GEMM is 3x slower
                                          than float32 (the rows convert to float32 and back)
The copy costs the weights' size again (twice on AVX2) and ~1 s to make, and a run that prefills
one prompt and then decodes one row at a time does not need it. So it is made on a weight's second
call that would use it (`PackedWeight`); the first such call (typically the prefill) takes the
plain weight: F.linear, or without native bf16 float32 arithmetic on the weight converted for the
call. A one-prompt `tritium generate` thus never packs; batched decoding packs at its first step.
Elsewhere (CUDA, float16, builds without mkldnn, or TRITIUM_CPU_PACK=0) there is no packed copy
and `linear` is F.linear. `kernel_for` names the path a call takes (tests assert it).
"""
from __future__ import annotations

import os
import threading
from typing import Optional

import torch
import torch.nn.functional as F

from tritium.config import cpu_has_native_bf16

# oneDNN picks its blocked layout for this many rows; the packed weight serves any row count,
# and 32 is within a few percent of the best layout from 1 to 64 rows (AVX-512 and AVX2).
PACK_BATCH_HINT = 32

# Without native bf16, ATen's bf16 matmul (float32 sums) still beats the float32 oneDNN copy up to
# this many rows (2 AVX2 cores, SmolLM2 shapes: 14.5 ms against 27.6 ms a step at 2 rows, even at 4).
ATEN_BF16_MAX_ROWS_WITHOUT_NATIVE = 3

# The kernels `linear` can take (see kernel_for).
ATEN_BF16, PACKED, PACKED_FLOAT32, PLAIN = "aten_bf16", "onednn_packed", "onednn_packed_float32", "f_linear"
PLAIN_FLOAT32 = "f_linear_float32"  # bf16 weight converted for the call (first call, no native bf16)

_mkldnn_flag_lock = threading.Lock()


def packing_available() -> bool:
    """oneDNN packing is built in and not turned off (TRITIUM_CPU_PACK=0)."""
    return (os.environ.get("TRITIUM_CPU_PACK", "1") != "0" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def bf16_packing_supported() -> bool:
    """oneDNN may run bfloat16 matmuls on this CPU's bf16 instructions (else its bf16 path is slow)."""
    return cpu_has_native_bf16()


def packed_dtype(weight: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype of the oneDNN copy to make of `weight` ([out, in]), or None for no copy."""
    if weight.device.type != "cpu" or weight.dim() != 2 or not packing_available():
        return None
    if weight.dtype == torch.float32:
        return torch.float32
    if weight.dtype == torch.bfloat16:
        return torch.bfloat16 if bf16_packing_supported() else torch.float32
    return None  # float16: no packed path (slow on CPU)


def can_pack(weight: torch.Tensor) -> bool:
    """Whether `weight` ([out, in]) gets a oneDNN-packed copy on this machine."""
    return packed_dtype(weight) is not None


class PackedWeight:
    """A weight's oneDNN copy in `dtype`, made when first asked for (under a lock, once)."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype):
        self.weight, self.dtype = weight, dtype
        self.first_call_done = False  # the first call that would use the copy ran without it
        self._tensor: Optional[torch.Tensor] = None
        self._lock = threading.Lock()

    @property
    def is_made(self) -> bool:
        return self._tensor is not None

    @property
    def tensor(self) -> torch.Tensor:
        """The packed copy (a tensor with is_mkldnn), made now if not yet."""
        if self._tensor is None:
            with self._lock:
                if self._tensor is None:
                    w = self.weight.detach().to(self.dtype)  # [out, in]
                    self._tensor = torch.ops.mkldnn._reorder_linear_weight(w, PACK_BATCH_HINT)
        return self._tensor


def pack_weight(weight: torch.Tensor, dtype: Optional[torch.dtype] = None) -> PackedWeight:
    """[out, in] plain -> its oneDNN copy in `dtype` (default: packed_dtype(weight)), made when needed."""
    return PackedWeight(weight, dtype or packed_dtype(weight))


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    # x: [..., in] -> [..., out], in x's dtype (float32 accumulation inside oneDNN)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def aten_gemv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """F.linear through ATen's own bf16 kernel (gemv for one row): while mkldnn is enabled, bf16 matmuls go to oneDNN, and the
    switch is process-wide, so it is turned off around this call only (locked, so concurrent
    callers restore it correctly; another thread's bf16 matmul meanwhile merely takes ATen's path)."""
    with _mkldnn_flag_lock:
        enabled = torch._C._get_mkldnn_enabled()
        torch._C._set_mkldnn_enabled(False)
        try:
            return F.linear(x, weight, bias)
        finally:
            torch._C._set_mkldnn_enabled(enabled)


def kernel_for(x: torch.Tensor, packed: Optional[PackedWeight]) -> str:
    """Which kernel `linear(x, weight, packed, bias)` runs: ATEN_BF16 (one bf16 row: ATen's gemv;
    up to ATEN_BF16_MAX_ROWS_WITHOUT_NATIVE rows where the copy is float32), PACKED /
    PACKED_FLOAT32, or, on the weight's first such call, PLAIN / PLAIN_FLOAT32 (no copy yet)."""
    if packed is None:
        return PLAIN
    rows = x.numel() // x.shape[-1]
    native_copy = packed.dtype == x.dtype
    if x.dtype == torch.bfloat16 and (rows == 1 or (not native_copy and rows <= ATEN_BF16_MAX_ROWS_WITHOUT_NATIVE)):
        return ATEN_BF16
    if not packed.is_made and not packed.first_call_done:
        return PLAIN if native_copy else PLAIN_FLOAT32
    return PACKED if native_copy else PACKED_FLOAT32


def linear(x: torch.Tensor, weight: torch.Tensor, packed: Optional[PackedWeight],
           bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x: [..., in] -> [..., out] in x's dtype with the fastest CPU kernel; `packed` is
    pack_weight(weight) or None."""
    kernel = kernel_for(x, packed)
    if kernel == ATEN_BF16:
        return aten_gemv(x, weight, bias)
    if kernel == PACKED:
        return packed_linear(x, packed.tensor, bias)
    if packed is not None and kernel in (PLAIN, PLAIN_FLOAT32):
        packed.first_call_done = True  # the next one makes the copy
    if kernel == PLAIN:
        return F.linear(x, weight, bias)
    # float32 arithmetic on bf16 values, rounded to x's dtype as a bf16 kernel would
    bias32 = None if bias is None else bias.float()
    if kernel == PLAIN_FLOAT32:
        return F.linear(x.float(), weight.float(), bias32).to(x.dtype)
    return packed_linear(x.float(), packed.tensor, bias32).to(x.dtype)

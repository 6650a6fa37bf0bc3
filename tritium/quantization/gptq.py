"""GPTQ (W4A16_GPTQ): int4 groups chosen one input column at a time, each column's rounding error
pushed onto the columns not yet quantized, weighted by the inverse Hessian of the layer's
calibration inputs (Frantar et al., 2022), so the layer's output on those inputs changes least.

Per quantized linear, with H = 2 X^T X / n over its calibration inputs X [n, K]:
    H += 1% of its mean diagonal (dampening); U = upper Cholesky factor of H^-1
    for each column c (in blocks of the group size; a group's scale and zero point come from
    quant_utils.int4_group_params' range search when its first column comes up, as the weights
    stand then):
        q_c = dequant(quant(w_c));  e = (w_c - q_c) / U[c, c];  w_{c+1..} -= e U[c, c+1..]
The result is on tritium's int4 grid (quant_utils' asymmetric groups): the layer keeps the
quantized weight and its (scale, zero) (int4_params), which Int4WeightOnlyMethod.quantize stores.
No act-order (columns in their own order), so a group is a contiguous run of inputs, as the
kernels want.

The Hessians are gathered a window of linears at a time (HESSIAN_BUDGET bytes of [K, K] float32;
an 8B model's all at once would be ~32 GB): the first window's in calibration.py's statistics
pass, each later window's in one more pass over the samples, through the layers quantized
before it (their inputs as the quantized model will see them, as in GPTQ's sequential mode).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tritium.quantization.quant_utils import INT4_MAX, int4_group_params, padded_k

DAMPENING = 0.01
HESSIAN_BUDGET = 4 << 30  # bytes of X^T X held at once


def hessian_windows(linears: list[nn.Module], budget: Optional[int] = None) -> list[list[nn.Module]]:
    """Consecutive runs of `linears` (model order) whose [K, K] float32 Hessians fit in budget
    bytes (HESSIAN_BUDGET) together; a single larger one gets a window of its own."""
    budget = HESSIAN_BUDGET if budget is None else budget
    windows: list[list[nn.Module]] = [[]]
    used = 0
    for m in linears:
        size = 4 * m.weight.shape[1] ** 2
        if windows[-1] and used + size > budget:
            windows.append([])
            used = 0
        windows[-1].append(m)
        used += size
    return windows


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, group: int, scale_dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [N, K], hessian [K, K] (X^T X, any positive multiple) -> (dequantized weight [N, K]
    float32 on the int4 grid, scale [N, Kp/G] float32 rounded through scale_dtype, zero [N, Kp/G])."""
    n, k = w.shape
    kp = padded_k(k, group)
    w = F.pad(w.float(), (0, kp - k)).clone()  # [N, Kp]; padded columns are zeros with zero Hessian
    h = torch.zeros(kp, kp, dtype=torch.float64, device=w.device)
    h[:k, :k] = hessian.double()
    dead = torch.diagonal(h) == 0  # inputs that were always zero: any value works
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(DAMPENING * torch.diagonal(h).mean())
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()  # [Kp, Kp]
    scales = torch.empty(n, kp // group, device=w.device)
    zeros = torch.empty_like(scales)
    for g0 in range(0, kp, group):
        cols = slice(g0, g0 + group)
        block, u_block = w[:, cols].clone(), u[cols, cols]  # [N, G], [G, G]
        scale, zero = int4_group_params(block, group)  # [N, 1] each
        scale = scale.to(scale_dtype).float()
        scales[:, g0 // group], zeros[:, g0 // group] = scale[:, 0], zero[:, 0]
        errors = torch.empty_like(block)
        for i in range(group):
            col = block[:, i]
            q = ((torch.round(col / scale[:, 0]) + zero[:, 0]).clamp(0, INT4_MAX) - zero[:, 0]) * scale[:, 0]
            err = (col - q) / u_block[i, i]
            block[:, i:] -= err[:, None] * u_block[i, i:][None, :]
            block[:, i] = q
            errors[:, i] = err
        w[:, cols] = block
        w[:, g0 + group:] -= errors @ u[cols, g0 + group:]  # the block's errors onto later columns
    return w[:, :k], scales, zeros


@torch.no_grad()
def apply_gptq(windows: list[list[nn.Module]], stats: dict, group: int,
               gather: Callable[[frozenset[str]], dict]) -> None:
    """Replace every quantized linear's float weight by its GPTQ solution (on the int4 grid) and
    set `int4_params` (scale, zero) for Int4WeightOnlyMethod.quantize. windows: hessian_windows';
    stats holds the first window's X^T X; gather(prefixes) runs a pass for a later window's."""
    with tqdm(total=sum(map(len, windows)), desc="GPTQ", unit="linear") as progress:
        for i, window in enumerate(windows):
            if i:
                stats = gather(frozenset(m.prefix for m in window))
            for m in window:
                w = m.weight.data
                q, scale, zero = gptq_quantize(w, stats[m.prefix].xtx.to(w.device), group, m.params_dtype)
                w.copy_(q.to(w.dtype))
                m.int4_params = (scale, zero)
                stats[m.prefix].xtx = None  # [K, K] float32 each: free them as they are used
                progress.update()

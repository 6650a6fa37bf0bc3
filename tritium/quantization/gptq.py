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
kernels want. Statistics come from one float pass (calibration.py), not layer by layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tritium.quantization.quant_utils import INT4_MAX, int4_group_params, padded_k

DAMPENING = 0.01


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
def apply_gptq(model: nn.Module, stats: dict, group: int) -> None:
    """Replace every quantized linear's float weight by its GPTQ solution (on the int4 grid) and
    set `int4_params` (scale, zero) for Int4WeightOnlyMethod.quantize."""
    from tritium.quantization.calibration import quantized_linears

    for m in tqdm(quantized_linears(model), desc="GPTQ", unit="linear"):
        w = m.weight.data
        q, scale, zero = gptq_quantize(w, stats[m.prefix].xtx.to(w.device), group, m.params_dtype)
        w.copy_(q.to(w.dtype))
        m.int4_params = (scale, zero)
        stats[m.prefix].xtx = None  # [K, K] float32 each: free them as they are used

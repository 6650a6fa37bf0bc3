"""AWQ (W4A16_AWQ): activation-aware scales and clipping before int4 group quantization.

For each foldable linear (smoothing.py), on its calibration inputs X [n, K]:
  1. scale search: x_mean = mean |x| per channel, w_mean = mean over rows of |W| normalised by
     its group's max; candidates s = 1 (plain round-to-nearest) and, for r in 0, 0.05, ..., 0.95,
     s = x_mean^r / (w_mean^(1-r) + 1e-4) normalised by sqrt(max(s) * min(s)); loss =
     || X W^T - (X / s) Q(W * s)^T ||^2; the best s is folded. With s = 1 among the candidates,
     AWQ cannot do worse than round-to-nearest on the calibration text;
  2. clip search (every quantized linear but qkv, whose outputs feed softmax): per output row
     and group, the weights clipped to amax * (1 - i/20), i = 1..9, or not clipped (quantized
     with the usual range search, quant_utils.int4_group_params), minimising the group's share of the output error; the chosen clip is
     applied to the weight and its (scale, zero) handed to Int4WeightOnlyMethod (int4_params).
The loss is taken on the linear's own output (AutoAWQ measures whole blocks; per-linear is
ModelOpt's awq_lite choice, and much cheaper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tritium.quantization.quant_utils import INT4_MAX, RANGE_STEPS, fake_quantize_groups, int4_group_params, padded_k
from tritium.quantization.smoothing import fold_groups

GRID = 20
CLIP_STEPS = 10
ROW_CHUNK = 256


def _pad(t: torch.Tensor, kp: int) -> torch.Tensor:
    return F.pad(t, (0, kp - t.shape[-1]))


def _fake_quant(w: torch.Tensor, group: int) -> torch.Tensor:
    """w [N, K] -> int4 groups (min / max, no range search: cheap enough to try every
    candidate) and back, K zero-padded to the group size; float32 [N, K]."""
    k = w.shape[1]
    wg = _pad(w.float(), padded_k(k, group)).reshape(w.shape[0], -1, group)
    q = fake_quantize_groups(wg, *int4_group_params(wg.reshape(w.shape[0], -1), group, (INT4_MAX,)))
    return q.reshape(w.shape[0], -1)[:, :k]


@torch.no_grad()
def search_scale(x: torch.Tensor, x_mean: torch.Tensor, w: torch.Tensor, group: int) -> torch.Tensor:
    """x [n, K], x_mean [K], w [N, K] (float32) -> the best per-channel scale s [K]."""
    n, k = w.shape
    kp = padded_k(k, group)
    wg = _pad(w.abs(), kp).view(n, -1, group)
    w_mean = (wg / wg.amax(dim=-1, keepdim=True).clamp(min=1e-8)).view(n, kp)[:, :k].mean(dim=0)  # [K]
    ref = x @ w.t()  # [n, N]
    candidates = [torch.ones_like(x_mean)]
    for i in range(GRID):
        r = i / GRID
        s = (x_mean.pow(r) / (w_mean.pow(1 - r) + 1e-4)).clamp(min=1e-4)
        candidates.append(s / (s.max() * s.min()).sqrt())
    best, best_loss = candidates[0], float("inf")
    for s in candidates:
        loss = ((x / s) @ _fake_quant(w * s, group).t() - ref).pow(2).mean().item()
        if loss < best_loss:
            best, best_loss = s, loss
    return best


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, group: int
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """x [n, K], w [N, K] (float32) -> (max |w| to keep per (row, group) [N, Kp/G], and the
    (scale, zero) [N, Kp/G] of the clipped groups)."""
    n, k = w.shape
    kp = padded_k(k, group)
    xg = _pad(x, kp).view(x.shape[0], -1, group)  # [t, groups, G]
    wg = _pad(w, kp).view(n, -1, group)  # [N, groups, G]
    amax = wg.abs().amax(dim=-1)  # [N, groups]
    best = amax.clone()
    best_scale, best_zero = torch.empty_like(amax), torch.empty_like(amax)
    for r0 in range(0, n, ROW_CHUNK):
        rows = slice(r0, r0 + ROW_CHUNK)
        w_rows = wg[rows]  # [R, groups, G]
        ref = torch.einsum("tgk,rgk->rgt", xg, w_rows)  # [R, groups, t]
        best_err = torch.full(amax[rows].shape, float("inf"), device=w.device)
        for i in range(CLIP_STEPS):
            max_val = amax[rows] * (1 - i / GRID)  # [R, groups]
            clipped = torch.maximum(torch.minimum(w_rows, max_val[..., None]), -max_val[..., None])
            steps = RANGE_STEPS if i == 0 else (INT4_MAX,)  # unclipped: the usual range search
            scale, zero = int4_group_params(clipped.reshape(-1, group), group, steps)  # [R * groups, 1]
            scale, zero = scale.view(max_val.shape), zero.view(max_val.shape)
            q = fake_quantize_groups(clipped, scale, zero)
            err = (torch.einsum("tgk,rgk->rgt", xg, q) - ref).pow(2).mean(dim=-1)  # [R, groups]
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best[rows] = torch.where(better, max_val, best[rows])
            best_scale[rows] = torch.where(better, scale, best_scale[rows])
            best_zero[rows] = torch.where(better, zero, best_zero[rows])
    return best, (best_scale, best_zero)


@torch.no_grad()
def apply_awq(model: nn.Module, model_config, stats: dict, group: int) -> None:
    """Fold AWQ scales into the float model, clip the weights, and set each clipped linear's
    `int4_params` (scale, zero) [N, Kp/G]."""
    groups = list(fold_groups(model))
    for g in tqdm(groups, desc="AWQ search", unit="linear"):
        s_in = stats[g.linear.prefix]
        x = s_in.kept_rows().to(g.linear.weight.device)  # [n, K] float32
        w = g.linear.weight.data.float()
        s = search_scale(x, s_in.channel_mean.to(x.device), w, group)
        g.fold(s)
        s_in.rows = [x / s]  # what the linear sees now
    for m in tqdm([g.linear for g in groups], desc="AWQ clip", unit="linear"):
        if m.prefix.endswith("qkv_proj"):
            continue
        x = stats[m.prefix].kept_rows().to(m.weight.device)
        w = m.weight.data
        max_val, m.int4_params = search_clip(x, w.float(), group)
        k = w.shape[1]
        limit = max_val.repeat_interleave(group, dim=1)[:, :k].to(w.dtype)  # [N, K]
        w.copy_(torch.maximum(torch.minimum(w, limit), -limit))

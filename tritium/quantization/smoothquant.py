"""SmoothQuant (W8A8_SQ_PER_CHANNEL): migrate activation outliers into the weights before int8.

Per input channel c of each foldable linear (smoothing.py):
    s_c = max|x_c| ^ alpha / max_rows |W_:,c| ^ (1 - alpha)       (clamped to >= 1e-5)
then the producer is divided by s and the weight's columns multiplied by it, so per-token int8
activations see flatter channels while per-channel int8 weights absorb the difference. alpha is
QuantConfig.smoothquant_val (0.5 by default, as TensorRT-LLM).
"""
from __future__ import annotations

import torch
from torch import nn

from tritium.quantization.smoothing import fold_groups


@torch.no_grad()
def smoothquant_scales(act_amax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """act_amax [K], weight [N, K] -> s [K] float32."""
    w_amax = weight.abs().amax(dim=0).float().clamp(min=1e-5)  # [K]
    s = act_amax.float().clamp(min=1e-5).pow(alpha) / w_amax.pow(1.0 - alpha)
    return s.clamp(min=1e-5)


@torch.no_grad()
def apply_smoothquant(model: nn.Module, stats: dict, alpha: float) -> None:
    for group in list(fold_groups(model)):
        act = stats[group.linear.prefix].channel_amax
        group.fold(smoothquant_scales(act.to(group.linear.weight.device), group.linear.weight, alpha))

"""Random weights from the config alone, for benchmarks: speed does not depend on the values.

Deterministic (one seeded generator per device, parameters in definition order); linear and
embedding weights ~ N(0, std), biases zero, norm weights one, which keeps activations tame.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_dummy_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        elif param.dim() == 1:
            param.zero_()
        else:
            if param.device not in generators:
                generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
            param.normal_(0.0, std, generator=generators[param.device])

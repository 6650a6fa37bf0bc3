"""Per-input-channel scales folded into a model without changing its float function.

A linear layer's input x reaches it through a "producer" whose outputs are its input channels:
an RMSNorm (its weight), or the up rows of the fused gate/up projection (down_proj's input is
silu(gate) * up). Dividing the producer by s and multiplying the linear's columns by s leaves
x W^T unchanged (x / s @ (W * s)^T) while moving magnitude between activations and weights:
SmoothQuant (smoothquant.py) and AWQ (awq.py) both choose s per channel and fold it this way.
For each Llama decoder layer the foldable pairs are:
    input_layernorm            -> qkv_proj
    post_attention_layernorm   -> gate_up_proj
    gate_up_proj (up rows)     -> down_proj
(o_proj's input comes from attention over v: foldable into v's rows only without GQA; skipped.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn


@dataclass
class FoldGroup:
    linear: nn.Module  # the consumer: its weight columns are multiplied by s
    producer: torch.Tensor  # the producer's output channels, dim 0 (norm weight, or up rows): divided by s

    def fold(self, s: torch.Tensor) -> None:
        """s [K] float32 > 0."""
        w = self.linear.weight.data
        w.copy_((w.float() * s[None, :].to(w.device)).to(w.dtype))
        p = self.producer
        shape = (-1,) + (1,) * (p.dim() - 1)
        p.copy_((p.float() / s.to(p.device).reshape(shape)).to(p.dtype))


def fold_groups(model: nn.Module) -> Iterator[FoldGroup]:
    """The foldable (producer -> quantized linear) pairs of every decoder layer whose linear has
    a float weight still (i.e. is about to be quantized)."""
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        pairs = [(attn.qkv_proj, layer.input_layernorm.weight.data),
                 (mlp.gate_up_proj, layer.post_attention_layernorm.weight.data)]
        gate_up = getattr(mlp.gate_up_proj, "weight", None)
        if gate_up is not None and gate_up.is_floating_point():
            pairs.append((mlp.down_proj, gate_up.data[gate_up.shape[0] // 2:]))  # up rows [I, H]
        for linear, producer in pairs:
            if getattr(linear, "is_quantized", True) is False:
                yield FoldGroup(linear, producer)

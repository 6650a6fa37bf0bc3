"""What every quantized LinearMethod shares: a float weight while loading, quantized after.

Two ways a quantized layer gets its weights:
  online      the checkpoint is in float: create_weights registers the usual float `weight`
              (sharded by the layer's weight_loader), and process_weights_after_loading
              quantizes it (after calibration, if the method needs statistics) and drops it;
  serialized  the checkpoint already holds tritium's quantized layout (a saved engine, or a
              pre-quantized checkpoint converted on the fly): create_weights registers those
              parameters directly and nothing is quantized at load.
Between loading and quantizing, the layer's float weight can be observed and transformed by
calibration (quantization/calibration.py), which runs the float model through
`float_linear`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from tritium.layers.linear import LinearMethod, new_param


def replace_param(layer: nn.Module, name: str, value: torch.Tensor) -> None:
    """Set (or replace) parameter `name` of `layer` to `value` (no gradient)."""
    if name in layer._parameters:
        del layer._parameters[name]
    layer.register_parameter(name, nn.Parameter(value, requires_grad=False))


def loaded_param(layer: nn.Module, name: str, shape, dtype: torch.dtype) -> None:
    """Register a serialized-layout parameter that the layer's (sharding) weight_loader fills."""
    setattr(layer, name, new_param(shape, dtype, layer.weight_loader, f"{layer.prefix}.{name}"))


class QuantizedLinearMethod(LinearMethod):
    """Base of the quantized methods: subclasses define create_quantized, quantize and apply."""

    def __init__(self, serialized: bool = False):
        self.serialized = serialized

    def create_weights(self, layer, input_size, output_size, params_dtype):
        layer.params_dtype = params_dtype or torch.get_default_dtype()
        layer.is_quantized = self.serialized
        if self.serialized:
            self.create_quantized(layer, input_size, output_size, layer.params_dtype)
        else:
            layer.weight = new_param((output_size, input_size), layer.params_dtype, layer.weight_loader,
                                     f"{layer.prefix}.weight")

    def process_weights_after_loading(self, layer):
        if not layer.is_quantized:
            with torch.no_grad():
                self.quantize(layer, layer.weight.data)
            layer.is_quantized = True
        self.prepare(layer)

    # ---- what subclasses define ------------------------------------------------------------
    def create_quantized(self, layer: nn.Module, input_size: int, output_size: int, dtype: torch.dtype) -> None:
        """Register the quantized layout's parameters (empty, filled by loading)."""
        raise NotImplementedError

    def quantize(self, layer: nn.Module, weight: torch.Tensor) -> None:
        """Replace the float weight [N, K] with the quantized layout's parameters."""
        raise NotImplementedError

    def prepare(self, layer: nn.Module) -> None:
        """Derive runtime-only state from the quantized parameters (never saved)."""


def float_linear(layer: nn.Module, x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The layer's float computation before quantization (calibration runs this)."""
    return F.linear(x, layer.weight, bias)

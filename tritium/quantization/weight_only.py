"""Weight-only quantization: W8A16 (int8, one scale per output channel) and W4A16 (int4, one
scale and zero point per group of input channels; plain RTN, or AWQ / GPTQ weights which share
the layout). Activations stay in the model dtype.

GPU: up to WEIGHT_ONLY_KERNEL_MAX_ROWS rows run the Triton kernels (kernels/streaming_gemm.py),
which read only the quantized bytes; larger batches dequantize the weight in one pass
(kernels/dequant.py) and use cuBLAS.
CPU: int8 through ATen's int8 weight kernel; int4 dequantized to float32 per call (correct, slow).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tritium.kernels import use_triton
from tritium.quantization.base import QuantizedLinearMethod, loaded_param, replace_param
from tritium.quantization.quant_utils import dequantize_int4, padded_k, quantize_int4, quantize_int8_per_row

# Rows up to which the weight-streaming kernels beat dequantize + cuBLAS (decode batches).
WEIGHT_ONLY_KERNEL_MAX_ROWS = 64
# ATen's int8-weight CPU kernel is fast for a few rows, far slower than dequantize + matmul for a prefill.
CPU_INT8_KERNEL_MAX_ROWS = 4


def _use_kernel(x: torch.Tensor) -> bool:
    """Whether x [M, K]'s rows go through the weight-streaming kernels."""
    return use_triton(x) and x.numel() // x.shape[-1] <= WEIGHT_ONLY_KERNEL_MAX_ROWS


class Int8WeightOnlyMethod(QuantizedLinearMethod):
    """W8A16: weight int8 [N, K], weight_scale float32 [N]."""

    def create_quantized(self, layer, input_size, output_size, dtype):
        loaded_param(layer, "weight", (output_size, input_size), torch.int8)
        loaded_param(layer, "weight_scale", (output_size,), torch.float32)

    def quantize(self, layer, weight):
        q, scale = quantize_int8_per_row(weight)
        replace_param(layer, "weight", q)
        replace_param(layer, "weight_scale", scale)

    def apply(self, layer, x, bias):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # [M, K]
        if _use_kernel(x2):
            from tritium.kernels.streaming_gemm import w8a16_gemm

            y = w8a16_gemm(x2.contiguous(), layer.weight, layer.weight_scale, bias)
        elif use_triton(x2):
            from tritium.kernels.dequant import dequantize_int8_rows

            y = F.linear(x2, dequantize_int8_rows(layer.weight, layer.weight_scale, x.dtype), bias)
        elif x.is_cuda or x2.shape[0] > CPU_INT8_KERNEL_MAX_ROWS:
            y = F.linear(x2, layer.weight.to(x.dtype) * layer.weight_scale.to(x.dtype)[:, None], bias)
        else:  # decode rows: ATen's CPU kernel reads the int8 weight directly
            y = torch._weight_int8pack_mm(x2.contiguous(), layer.weight, layer.weight_scale.to(x.dtype))
            if bias is not None:
                y = y + bias
        return y.reshape(*shape[:-1], -1)


class Int4WeightOnlyMethod(QuantizedLinearMethod):
    """W4A16 / W4A16_AWQ / W4A16_GPTQ: weight_packed uint8 [N, Kp/2], weight_scale [N, Kp/G]
    (model dtype), weight_zero uint8 [N, Kp/G] (quant_utils' int4 layout)."""

    def __init__(self, group_size: int, serialized: bool = False):
        super().__init__(serialized)
        self.group_size = group_size

    def create_quantized(self, layer, input_size, output_size, dtype):
        kp = padded_k(input_size, self.group_size)
        loaded_param(layer, "weight_packed", (output_size, kp // 2), torch.uint8)
        loaded_param(layer, "weight_scale", (output_size, kp // self.group_size), dtype)
        loaded_param(layer, "weight_zero", (output_size, kp // self.group_size), torch.uint8)

    def quantize(self, layer, weight):
        params = getattr(layer, "int4_params", None)  # (scale, zero) [N, Kp/G] chosen by AWQ / GPTQ
        packed, scale, zero = quantize_int4(weight, self.group_size, scale_dtype=layer.params_dtype, params=params)
        del layer._parameters["weight"]
        replace_param(layer, "weight_packed", packed)
        replace_param(layer, "weight_scale", scale)
        replace_param(layer, "weight_zero", zero)
        layer.int4_params = None

    def dequantized(self, layer, dtype: torch.dtype) -> torch.Tensor:
        """The dense [N, K] weight in `dtype` (one Triton pass on a GPU)."""
        if use_triton(layer.weight_packed):
            from tritium.kernels import dequant

            return dequant.dequantize_int4(layer.weight_packed, layer.weight_scale, layer.weight_zero,
                                           self.group_size, layer.input_size_per_partition, dtype)
        return dequantize_int4(layer.weight_packed, layer.weight_scale, layer.weight_zero, self.group_size,
                               layer.input_size_per_partition, dtype)

    def apply(self, layer, x, bias):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # [M, K]
        if _use_kernel(x2):
            from tritium.kernels.streaming_gemm import w4a16_gemm

            y = w4a16_gemm(x2.contiguous(), layer.weight_packed, layer.weight_scale, layer.weight_zero,
                           self.group_size, bias)
        else:
            w = self.dequantized(layer, x.dtype if x.is_cuda else torch.float32)
            y = F.linear(x2.to(w.dtype), w, None if bias is None else bias.to(w.dtype)).to(x.dtype)
        return y.reshape(*shape[:-1], -1)

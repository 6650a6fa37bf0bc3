"""W8A8_SQ_PER_CHANNEL: int8 weights (one scale per output channel) and int8 activations scaled
per token at run time, after SmoothQuant has moved activation outliers into the weights
(quantization/smoothquant.py folds its scales into the preceding norms / linears at build time,
so at run time this is a plain int8 GEMM).

GPU: torch._int_mm (int8 x int8 -> int32; it wants more than 16 rows, so decode batches are
padded), rescaled in float32. CPU: the same integer products summed in float32 (exact while the
sums stay below 2^24, which int8 products of a hidden size of a few thousand do).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tritium.kernels import use_triton
from tritium.quantization.base import QuantizedLinearMethod, loaded_param, replace_param
from tritium.quantization.quant_utils import INT8_MAX, quantize_int8, quantize_int8_per_row

_INT_MM_MIN_ROWS = 17


def quantize_per_token(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (int8 [M, K], float32 scale [M, 1]); on a GPU in two Triton passes (row
    scales, then the int8 values)."""
    if use_triton(x2):
        from tritium.kernels.act_quant import quantize_rows, row_scales

        x2 = x2.contiguous()
        scale = row_scales(x2, INT8_MAX)[:, None]  # [M, 1]
        return quantize_rows(x2, scale, torch.int8), scale
    scale = (x2.abs().amax(dim=1, keepdim=True).float() / INT8_MAX).clamp(min=1e-12)
    return quantize_int8(x2, scale), scale


class Int8W8A8Method(QuantizedLinearMethod):
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
        xq, x_scale = quantize_per_token(x2)
        if x.is_cuda:
            m = xq.shape[0]
            if m < _INT_MM_MIN_ROWS:
                xq = F.pad(xq, (0, 0, 0, _INT_MM_MIN_ROWS - m))
            acc = torch._int_mm(xq, layer.weight.t())[:m].float()  # [M, N] int32 -> float32
        else:
            acc = F.linear(xq.float(), layer.weight.float())  # integer products, float32 sums
        y = acc * x_scale * layer.weight_scale[None, :]
        if bias is not None:
            y = y + bias.float()
        return y.to(x.dtype).reshape(*shape[:-1], -1)

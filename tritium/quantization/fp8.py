"""FP8 W8A8 linears (e4m3 weights and activations, float32 accumulation).

  FP8                        per-tensor weight scale, static per-tensor activation scale (from
                             calibration or the checkpoint's input_scale)
  FP8_PER_CHANNEL_PER_TOKEN  per-output-channel weight scales, activations scaled per token at
                             run time

Parameters (the saved layout): weight float8_e4m3fn [N, K], weight_scale float32 [N] (per-tensor
keeps one value in every row, so fused q/k/v shards of a checkpoint with their own scales load
as they are and are requantized to the largest one), input_scale float32 [1] (FP8 only).

GPU (compute capability 8.9+): up to GEMV_MAX_ROWS rows, the Triton weight-streaming kernel
(kernels/streaming_gemm.py), which rounds the activations onto FP8 itself; more rows,
torch._scaled_mm, the weight passed transposed (column-major, as cuBLASLt wants). Per-token
scaling uses the row-wise _scaled_mm from ROWWISE_MIN_ROWS rows and below that a unit-scale FP8
product rescaled in float32 (row-wise is slower at small M on an H200; it also writes only
bfloat16). CPU: the same arithmetic emulated: operands rounded through float8_e4m3fn,
dequantized and multiplied in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tritium.kernels import use_triton
from tritium.layers.linear import new_param
from tritium.quantization.base import QuantizedLinearMethod, loaded_param, replace_param
from tritium.quantization.quant_utils import FP8_DTYPE, fp8_scale, quantize_fp8, quantize_fp8_per_row

ROWWISE_MIN_ROWS = 128
# Rows up to which the Triton weight-streaming kernel (activations quantized inside it) runs instead
# of quantize-then-_scaled_mm: at batch 1 on an H200 the latter took 4.01 ms a step (per-tensor)
# and 5.93 ms (per-token) against bf16's 4.62, mostly its small per-call kernels (BENCHMARKS.md).
GEMV_MAX_ROWS = 16


def _max_loader(param, loaded_weight, shard_id=None):
    """input_scale of fused q/k/v (gate/up): one activation feeds them all; keep the largest."""
    value = loaded_weight.float().reshape(-1).max()
    param.data.copy_(torch.maximum(param.data, value.to(param.device)).reshape(param.shape))


class Fp8LinearMethod(QuantizedLinearMethod):
    def __init__(self, per_channel_per_token: bool, serialized: bool = False):
        super().__init__(serialized)
        self.dynamic = per_channel_per_token

    def create_quantized(self, layer, input_size, output_size, dtype):
        loaded_param(layer, "weight", (output_size, input_size), FP8_DTYPE)
        loaded_param(layer, "weight_scale", (output_size,), torch.float32)
        if not self.dynamic:
            layer.input_scale = new_param((1,), torch.float32, _max_loader, f"{layer.prefix}.input_scale")
            layer.input_scale.data.zero_()

    def quantize(self, layer, weight):
        if self.dynamic:
            q, scale = quantize_fp8_per_row(weight)
        else:
            scale = fp8_scale(weight.abs().amax()).expand(weight.shape[0]).contiguous()  # [N], one value
            q = quantize_fp8(weight, scale[:, None])
        replace_param(layer, "weight", q)
        replace_param(layer, "weight_scale", scale)
        if not self.dynamic:  # from calibration's activation range
            amax = getattr(layer, "input_amax", None)
            if amax is None:
                raise ValueError(f"{layer.prefix}: FP8 needs a static activation scale and calibration gave none")
            replace_param(layer, "input_scale", fp8_scale(amax).reshape(1))

    def prepare(self, layer):
        if self.dynamic:
            return
        if not float(layer.input_scale.max()) > 0:
            raise ValueError(f"{layer.prefix}: FP8 needs a static activation scale (input_scale) and the "
                             "checkpoint has none")
        scale = layer.weight_scale.data
        top = scale.max()
        if not torch.all(scale == top):  # fused shards with their own scales: requantize to the largest
            w = layer.weight.data.float() * scale[:, None]
            layer.weight.data.copy_(quantize_fp8(w, top))
            scale.fill_(top)
        layer.weight_scale_scalar = top.reshape(())

    def apply(self, layer, x, bias):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # [M, K]
        if x.is_cuda:
            y = self._apply_cuda(layer, x2, bias)
        else:
            y = self._apply_emulated(layer, x2, bias)
        return y.reshape(*shape[:-1], -1)

    def _quantize_input(self, layer, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [M, K] -> (fp8 [M, K], scale: [1] static or [M, 1] per token). On a GPU one Triton
        pass (per token: one more for the row scales) instead of torch's four float32 passes (by
        arithmetic, tens of ms of traffic in an 8192-token step of an 8B model)."""
        if use_triton(x2):
            from tritium.kernels.act_quant import quantize_rows, row_fp8_scales

            x2 = x2.contiguous()
            scale = row_fp8_scales(x2)[:, None] if self.dynamic else layer.input_scale  # [M, 1] or [1]
            return quantize_rows(x2, scale, FP8_DTYPE), scale
        if self.dynamic:
            scale = fp8_scale(x2.abs().amax(dim=1, keepdim=True))  # [M, 1]
        else:
            scale = layer.input_scale
        return quantize_fp8(x2, scale), scale

    def _apply_emulated(self, layer, x2, bias):
        xq, x_scale = self._quantize_input(layer, x2)
        w = layer.weight.float() * layer.weight_scale[:, None]  # [N, K]
        y = F.linear(xq.float() * x_scale, w, None if bias is None else bias.float())
        return y.to(x2.dtype)

    def _apply_cuda(self, layer, x2, bias):
        if x2.shape[0] <= GEMV_MAX_ROWS and use_triton(x2):  # decode: stream the FP8 weight once
            from tritium.kernels.streaming_gemm import fp8_gemv

            return fp8_gemv(x2.contiguous(), layer.weight, layer.weight_scale,
                            None if self.dynamic else layer.input_scale, bias)
        xq, x_scale = self._quantize_input(layer, x2)
        w_t = layer.weight.t()  # [K, N] column-major
        if not self.dynamic:
            return torch._scaled_mm(xq, w_t, scale_a=x_scale.reshape(()), scale_b=layer.weight_scale_scalar,
                                    bias=bias, out_dtype=x2.dtype, use_fast_accum=True)
        if x2.shape[0] >= ROWWISE_MIN_ROWS and x2.dtype == torch.bfloat16:  # row-wise writes bfloat16 only
            y = torch._scaled_mm(xq, w_t, scale_a=x_scale, scale_b=layer.weight_scale[None, :],
                                 out_dtype=x2.dtype)
            return y + bias if bias is not None else y
        one = torch.ones((), dtype=torch.float32, device=x2.device)
        y = torch._scaled_mm(xq, w_t, scale_a=one, scale_b=one, out_dtype=torch.float32)
        y = y * x_scale * layer.weight_scale[None, :]
        return (y + bias if bias is not None else y).to(x2.dtype)

"""Quantized linear layers built the way a model builds them, and the references they are checked
against; shared by the CPU tests (small shapes) and tests/gpu/test_quantization_gpu.py (real sizes).

    layer, w = quantized_linear("FP8", n=4096, k=4096, device="cuda", dtype=torch.bfloat16, calib=x)
    y = layer(x)
    rel_error(y, emulated_reference(layer, "FP8", x)) <= EMULATED_TOL[dtype]   # same arithmetic
    rel_error(y, x.double() @ w.double().t()) <= FLOAT_TOL["FP8"]               # quantization error

The emulated reference redoes each method's documented arithmetic in float64 from the layer's
quantized tensors (activation rounding included), so it checks the kernel path, not the choice
of scales; the float reference bounds the quantization error of random N(0, 1) data.
"""
from __future__ import annotations

import torch

from tritium.layers.linear import ReplicatedLinear
from tritium.quantization import ModelQuantization, QuantConfig
from tritium.quantization.quant_utils import FP8_DTYPE, FP8_MAX, INT8_MAX, round_half_away

ALGOS = ("W8A16", "W4A16", "FP8", "FP8_PER_CHANNEL_PER_TOKEN", "W8A8_SQ_PER_CHANNEL")

# ||y - float reference|| / ||float reference|| for N(0, 1) weights and activations: int8 steps of
# amax / 127 (~1%), e4m3's 3 mantissa bits on both operands (~5%), int4 groups of 128 (~10%).
FLOAT_TOL = {"W8A16": 0.02, "W4A16": 0.15, "FP8": 0.08, "FP8_PER_CHANNEL_PER_TOKEN": 0.08,
             "W8A8_SQ_PER_CHANNEL": 0.03}
# Against the emulated float64 arithmetic: float32 sums, or the output / dequantized weight rounded
# to bfloat16 (8 mantissa bits) plus FP8 tensor cores' fast accumulation.
EMULATED_TOL = {torch.float32: 1e-4, torch.bfloat16: 1.5e-2}


def random_weight(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def quantized_linear(algo: str, n: int, k: int, device, dtype: torch.dtype, calib: torch.Tensor,
                     seed: int = 0, group_size: int = 128) -> tuple[ReplicatedLinear, torch.Tensor]:
    """A ReplicatedLinear(k -> n) with `algo`'s method, loaded with a random float32 weight [n, k]
    and quantized; `calib` [rows, k] gives FP8's static activation scale. Returns (layer, weight)."""
    method = ModelQuantization(QuantConfig(quant_algo=algo, group_size=group_size)).linear_method("t")
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            layer = ReplicatedLinear(k, n, bias=False, prefix="t", linear_method=method)
    finally:
        torch.set_default_dtype(old)
    w = random_weight(n, k, seed)
    with torch.no_grad():
        layer.weight.weight_loader(layer.weight, w.to(dtype))
        layer.input_amax = calib.abs().max().float().to(device)  # what calibration records
        layer.process_weights_after_loading()
    return layer, w.to(dtype).float()


def _fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float64 value of x rounded onto e4m3 at `scale` (saturating)."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).double() * scale.double()


def emulated_reference(layer: ReplicatedLinear, algo: str, x: torch.Tensor) -> torch.Tensor:
    """float64 [M, N]: x [M, K] through `algo`'s arithmetic with the layer's quantized tensors."""
    xd = x.double()
    if algo == "W8A16":
        w = layer.weight.double() * layer.weight_scale.double()[:, None]
    elif algo == "W4A16":
        w = layer.linear_method.dequantized(layer, torch.float32).double()
    elif algo in ("FP8", "FP8_PER_CHANNEL_PER_TOKEN"):
        w = layer.weight.float().double() * layer.weight_scale.double()[:, None]
        if algo == "FP8":
            xd = _fp8(x, layer.input_scale.float())
        else:
            xd = _fp8(x, (x.float().abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12))
    elif algo == "W8A8_SQ_PER_CHANNEL":
        w = layer.weight.double() * layer.weight_scale.double()[:, None]
        s = (x.float().abs().amax(dim=1, keepdim=True) / INT8_MAX).clamp(min=1e-12)
        xd = round_half_away(x.float() / s).clamp(-INT8_MAX, INT8_MAX).double() * s.double()
    else:
        raise ValueError(algo)
    return xd @ w.t()


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double().to(y.device)
    return ((y.double() - ref).norm() / ref.norm()).item()

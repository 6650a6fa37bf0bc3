"""Weight-only GEMM kernels (int8 per-channel, int4 per-group) against dequantize-then-matmul in
float64, on fresh random weights quantized by tritium's own quantizers."""
from __future__ import annotations

import pytest
import torch

from tritium.kernels.weight_only_gemm import w4a16_gemm, w8a16_gemm
from tritium.quantization.quant_utils import dequantize_int4, quantize_int4, quantize_int8_per_row


def _reference(x, w, bias):
    y = x.double() @ w.double().t()
    return y + bias.double() if bias is not None else y


@pytest.mark.parametrize("m, n, k, dtype, with_bias", [
    (1, 40, 96, torch.float32, False),
    (5, 33, 200, torch.float32, True),
    (17, 24, 64, torch.bfloat16, False),
])
def test_w8a16_matches_dequantized_reference(m, n, k, dtype, with_bias, device):
    gen = torch.Generator().manual_seed(m * 1000 + n)
    w = torch.randn(n, k, generator=gen)
    q, scale = quantize_int8_per_row(w)
    x = torch.randn(m, k, generator=gen).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype) if with_bias else None
    y = w8a16_gemm(x.to(device), q.to(device), scale.to(device), None if bias is None else bias.to(device),
                   block_k=64)
    ref = _reference(x, q.float() * scale[:, None], bias)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.cpu().double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("m, n, k, group, dtype", [
    (1, 40, 128, 64, torch.float32),
    (3, 24, 160, 64, torch.float32),  # K padded to 192: a ragged last group
    (18, 16, 64, 32, torch.bfloat16),
])
def test_w4a16_matches_dequantized_reference(m, n, k, group, dtype, device):
    gen = torch.Generator().manual_seed(m * 7 + k)
    w = torch.randn(n, k, generator=gen)
    packed, scale, zero = quantize_int4(w, group, scale_dtype=dtype)
    x = torch.randn(m, k, generator=gen).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    y = w4a16_gemm(x.to(device), packed.to(device), scale.to(device), zero.to(device), group, bias.to(device))
    ref = _reference(x, dequantize_int4(packed, scale, zero, group, k), bias)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.cpu().double(), ref, rtol=tol, atol=tol * ref.abs().max().item())

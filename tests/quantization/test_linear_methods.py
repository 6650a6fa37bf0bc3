"""Every quantized linear method on the CPU: its output equals the method's arithmetic redone in
float64 from the quantized tensors, and stays within the expected quantization error of the float
layer (tests/gpu/test_quantization_gpu.py runs the same checks on a GPU at real sizes)."""
from __future__ import annotations

import pytest
import torch

from tests.quantization.linear_cases import (ALGOS, EMULATED_TOL, FLOAT_TOL, emulated_reference, quantized_linear,
                                             rel_error)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_cpu_path_matches_emulated_and_float_references(algo, rows):
    n, k = 96, 320  # k not a multiple of the int4 group: the last group is padded
    gen = torch.Generator().manual_seed(rows)
    calib = torch.randn(64, k, generator=gen)
    layer, w = quantized_linear(algo, n, k, "cpu", torch.float32, calib, seed=rows)
    x = torch.randn(rows, k, generator=gen)
    y = layer(x)
    assert y.shape == (rows, n) and y.dtype == torch.float32
    assert rel_error(y, emulated_reference(layer, algo, x)) <= EMULATED_TOL[torch.float32]
    assert rel_error(y, x.double() @ w.double().t()) <= FLOAT_TOL[algo]


@pytest.mark.parametrize("algo", ["W8A16", "W4A16", "FP8_PER_CHANNEL_PER_TOKEN"])
def test_bfloat16_activations_keep_their_dtype(algo):
    k = 256
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(9))
    layer, w = quantized_linear(algo, 64, k, "cpu", torch.bfloat16, x)
    y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert rel_error(y, emulated_reference(layer, algo, x.bfloat16())) <= EMULATED_TOL[torch.bfloat16]
    assert rel_error(y, x.double() @ w.double().t()) <= FLOAT_TOL[algo]

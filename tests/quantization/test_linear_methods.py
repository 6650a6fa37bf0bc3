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


def test_gptq_is_plain_rounding_for_an_identity_hessian_and_beats_it_on_correlated_inputs():
    from tritium.quantization.gptq import gptq_quantize
    from tritium.quantization.quant_utils import dequantize_int4, quantize_int4

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(48, 200, generator=gen)
    packed, scale, zero = quantize_int4(w, 32)
    rtn = dequantize_int4(packed, scale, zero, 32, 200)
    q, q_scale, q_zero = gptq_quantize(w, torch.eye(200), 32, torch.float32)
    assert torch.equal(q, rtn) and torch.equal(q_scale, scale) and torch.equal(q_zero, zero.float())

    mix = torch.randn(200, 200, generator=gen) / 200 ** 0.5 + torch.eye(200)
    x = torch.randn(2000, 200, generator=gen) @ mix  # correlated inputs
    q, _, _ = gptq_quantize(w, x.t() @ x, 32, torch.float32)
    err = lambda wq: ((x @ (wq - w).t()).norm() / (x @ w.t()).norm()).item()  # noqa: E731
    assert err(q) < 0.8 * err(rtn)


def test_gptq_hessian_windows_fit_the_budget_in_model_order():
    from torch import nn

    from tritium.quantization.gptq import hessian_windows

    linears = [nn.Linear(k, 8, bias=False) for k in (100, 100, 300, 100, 50)]  # Hessians 4 K^2 bytes
    windows = hessian_windows(linears, budget=4 * (100 ** 2 + 100 ** 2))
    assert windows == [linears[:2], linears[2:3], linears[3:]]  # the 300-wide one alone, over the budget
    assert hessian_windows(linears, budget=1 << 40) == [linears]

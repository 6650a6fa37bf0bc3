"""Weight-streaming GEMM kernels over quantized weights (int8 per-channel, int4 per-group, FP8 with
FP8 activations) against dequantize-then-matmul in float64, on fresh random weights quantized by
tritium's own quantizers; with and without split-K, one and several 16-row tiles."""
from __future__ import annotations

import pytest
import torch

from tritium.kernels import streaming_gemm
from tritium.kernels.streaming_gemm import GemvConfig, dense_gemv, fp8_gemv, w4a16_gemm, w8a16_gemm
from tritium.quantization.quant_utils import (dequantize_int4, fp8_scale, quantize_fp8, quantize_fp8_per_row,
                                              quantize_int4, quantize_int8_per_row)

SPLIT = GemvConfig(block_n=16, block_k=64, split_k=2)  # two programs share each output tile
WHOLE_K = GemvConfig(block_n=32, block_k=64, split_k=1)
GEMV_SPLIT = GemvConfig(block_n=16, block_k=64, split_k=2, gemv=True)  # one row a program, CUDA-core sums
GEMV_WHOLE_K = GemvConfig(block_n=32, block_k=64, split_k=1, gemv=True)


def _reference(x, w, bias):
    y = x.double() @ w.double().t()
    return y + bias.double() if bias is not None else y


def _assert_close(y, ref, dtype):
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.cpu().double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("m, n, k, dtype, with_bias, config", [
    (1, 40, 96, torch.float32, False, WHOLE_K),
    (5, 33, 200, torch.float32, True, SPLIT),
    (17, 24, 256, torch.bfloat16, False, SPLIT),
    (3, 24, 64, torch.bfloat16, True, None),  # the default choice
    (1, 40, 96, torch.float32, False, GEMV_SPLIT),
    (5, 33, 200, torch.bfloat16, True, GEMV_WHOLE_K),
])
def test_w8a16_matches_dequantized_reference(m, n, k, dtype, with_bias, config, device):
    gen = torch.Generator().manual_seed(m * 1000 + n)
    w = torch.randn(n, k, generator=gen)
    q, scale = quantize_int8_per_row(w)
    x = torch.randn(m, k, generator=gen).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype) if with_bias else None
    y = w8a16_gemm(x.to(device), q.to(device), scale.to(device), None if bias is None else bias.to(device),
                   config=config)
    assert y.dtype == dtype and y.shape == (m, n)
    _assert_close(y, _reference(x, q.float() * scale[:, None], bias), dtype)


@pytest.mark.parametrize("m, n, k, group, dtype, config", [
    (1, 40, 128, 64, torch.float32, GemvConfig(16, 64, 1)),
    (3, 24, 160, 64, torch.float32, GemvConfig(16, 64, 2)),  # K padded to 192: a ragged last group
    (18, 16, 256, 32, torch.bfloat16, GemvConfig(16, 64, 2)),  # two groups a step, split in two
    (2, 20, 96, 32, torch.bfloat16, None),
    (1, 40, 128, 64, torch.bfloat16, GemvConfig(16, 64, 2, gemv=True)),
    (3, 24, 160, 64, torch.float32, GemvConfig(16, 128, 1, gemv=True)),  # two groups a step, ragged end
    # nibbles to floats by the exponent trick, on both tile kinds
    (3, 24, 160, 64, torch.bfloat16, GemvConfig(16, 64, 2, int4_magic=True)),
    (1, 40, 128, 64, torch.float32, GemvConfig(16, 128, 1, gemv=True, int4_magic=True)),
    (1, 24, 160, 32, torch.bfloat16, GemvConfig(16, 64, 2, gemv=True, int4_magic=True)),  # ragged end, split
    # nibbles to 16-bit (q - zero) by PTX on a GPU (here Triton's operations in the same branch): the
    # dots in the model's type, the scales after; a float32 model keeps the float conversion
    (1, 40, 128, 64, torch.bfloat16, GemvConfig(16, 64, 2, int4_asm=True)),
    (3, 24, 160, 64, torch.float16, GemvConfig(16, 128, 1, int4_asm=True)),  # two groups a step, ragged end
    (18, 16, 256, 32, torch.bfloat16, GemvConfig(16, 64, 2, int4_asm=True)),  # two row blocks, split
    (3, 24, 160, 64, torch.float32, GemvConfig(16, 64, 2, int4_asm=True)),
])
def test_w4a16_matches_dequantized_reference(m, n, k, group, dtype, config, device):
    gen = torch.Generator().manual_seed(m * 7 + k)
    w = torch.randn(n, k, generator=gen)
    packed, scale, zero = quantize_int4(w, group, scale_dtype=dtype)
    x = torch.randn(m, k, generator=gen).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    y = w4a16_gemm(x.to(device), packed.to(device), scale.to(device), zero.to(device), group, bias.to(device),
                   config=config)
    _assert_close(y, _reference(x, dequantize_int4(packed, scale, zero, group, k), bias), dtype)


@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("m, n, k, dtype, config", [
    (1, 40, 128, torch.float32, WHOLE_K),
    (4, 24, 192, torch.bfloat16, SPLIT),
    (17, 16, 64, torch.bfloat16, None),
    (1, 40, 128, torch.bfloat16, GEMV_WHOLE_K),
    (4, 24, 192, torch.float32, GEMV_SPLIT),
])
def test_fp8_gemv_matches_w8a8_reference(per_token, m, n, k, dtype, config, device):
    """The activations are rounded onto FP8 in the kernel as quantize_fp8 rounds them (through the
    reciprocal scale: an ulp apart at most before rounding, the same FP8 values on these inputs)."""
    gen = torch.Generator().manual_seed(m + k + per_token)
    w = torch.randn(n, k, generator=gen)
    wq, w_scale = quantize_fp8_per_row(w)
    x = (torch.randn(m, k, generator=gen) * 3).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    if per_token:
        x_scale = fp8_scale(x.float().abs().amax(dim=1, keepdim=True))  # [M, 1]
        arg = None
    else:
        x_scale = fp8_scale(x.float().abs().amax() * 0.8).reshape(1)  # some inputs saturate
        arg = x_scale.to(device)
    x_fp8 = quantize_fp8(x, x_scale).float() * x_scale
    y = fp8_gemv(x.to(device), wq.to(device), w_scale.to(device), arg, bias.to(device), config=config)
    _assert_close(y, _reference(x_fp8, wq.float() * w_scale[:, None], bias), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 16])
@pytest.mark.parametrize("n, k, bias, config", [(96, 64, False, WHOLE_K), (50, 200, True, SPLIT),
                                                (50, 200, True, GEMV_SPLIT)])
def test_dense_gemv_matches_f_linear(device, dtype, rows, n, k, bias, config):
    gen = torch.Generator().manual_seed(rows + n)
    x = torch.randn(rows, k, generator=gen).to(dtype)
    w = (torch.randn(n, k, generator=gen) / k ** 0.5).to(dtype)
    b = torch.randn(n, generator=gen).to(dtype) if bias else None
    out = dense_gemv(x.to(device), w.to(device), None if b is None else b.to(device), config=config)
    assert out.shape == (rows, n) and out.dtype == dtype
    _assert_close(out, _reference(x, w, b), dtype)


@pytest.mark.parametrize("weight, group", [(streaming_gemm.INT4, 128), (streaming_gemm.INT4, 32),
                                           (streaming_gemm.FP8, 0), (streaming_gemm.DENSE, 0)])
def test_candidate_tiles(weight, group):
    """Tensor-core tiles for every row count, CUDA-core GEMV tiles only for a single row; int4 steps
    cover whole groups; every tile's pipelined stages fit the shared-memory budget."""
    n, k, sms = 14336, 4096, 132
    many = streaming_gemm._candidates(weight, n, k, group, sms=sms)
    one = streaming_gemm._candidates(weight, n, k, group, sms=sms, one_row=True)
    assert many and not any(c.gemv for c in many)
    assert any(c.gemv for c in one)
    magic = weight == streaming_gemm.INT4  # the exponent-trick conversion: int4 only, both tile kinds
    assert any(c.int4_magic for c in many) == magic and any(c.int4_magic and c.gemv for c in one) == magic
    # the inline-PTX conversion: int4 tensor-core tiles only, and a 16-bit model's compiled kernels
    assert any(c.int4_asm for c in many) == magic and not any(c.int4_asm and c.gemv for c in one)
    for c in (c for c in many if c.int4_asm):
        assert not streaming_gemm.asm_nibbles(c, weight, torch.float32)  # float32 models: no 16-bit pairs
        assert streaming_gemm.asm_nibbles(c, weight, torch.bfloat16)
    for c in one:
        rows = 1 if c.gemv else streaming_gemm.BLOCK_M
        stage = c.block_n * c.block_k * streaming_gemm._WEIGHT_BYTES[weight] + rows * c.block_k * 2
        assert 2 <= c.num_stages and c.num_stages * stage <= streaming_gemm._SMEM_BUDGET
        # split-K: enough programs for every SM twice, or each split down to its last 2-3 steps
        programs, steps = -(-n // c.block_n) * c.split_k, -(-k // c.block_k) // c.split_k
        assert programs >= 2 * sms or steps < 4
        if weight == streaming_gemm.INT4:
            assert c.block_k % group == 0


@pytest.mark.parametrize("config, rows", [(SPLIT, 3), (GEMV_SPLIT, 1), (GemvConfig(16, 64, split_k=3), 3),
                                          (SPLIT, 20)])  # two row blocks: a tile's counter each
def test_fused_split_sum_equals_the_split_kernel(device, monkeypatch, config, rows):
    """The last split program per tile sums the partials (with the bias);
    same result as the second kernel, and the arrival counters are left at zero for the next launch."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(rows, 200, generator=gen).to(device)
    wq, w_scale = quantize_fp8_per_row(torch.randn(40, 200, generator=gen))
    bias = torch.randn(40, generator=gen).to(device)
    args = (x, wq.to(device), w_scale.to(device), None, bias)
    monkeypatch.setenv("TRITIUM_FUSED_SPLIT_SUM", "0")  # the second kernel sums
    want = fp8_gemv(*args, config=config)
    monkeypatch.setenv("TRITIUM_FUSED_SPLIT_SUM", "1")
    for _ in range(2):  # the second launch finds the counters the first one left
        assert torch.equal(fp8_gemv(*args, config=config), want)
    assert int(streaming_gemm._ARRIVALS[x.device].abs().sum()) == 0

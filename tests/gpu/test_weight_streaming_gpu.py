"""The weight-streaming kernels over quantized weights at Llama-3.1-8B layer sizes on the GPU, with
the tile / split choice timed on the device (as the engine's graph warm-up makes it)."""
from __future__ import annotations

import pytest
import torch

from tritium.kernels import streaming_gemm as wog
from tritium.quantization.quant_utils import (dequantize_int4, fp8_scale, quantize_fp8, quantize_fp8_per_row,
                                              quantize_int4, quantize_int8_per_row)

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def timed_choice(monkeypatch):
    """These tests check the timed tile choice (tests/gpu/conftest.py turns it off elsewhere)."""
    monkeypatch.setenv("TRITIUM_GEMM_TUNING", "1")


def _close(y, ref):
    err = (y.float() - ref).abs().max().item()
    assert err <= 2e-2 * ref.abs().max().item(), err


@pytest.mark.parametrize("m", [1, 16, 40])
@pytest.mark.parametrize("n, k", [(6144, 4096), (4096, 14336)])
def test_quantized_gemv_at_real_sizes(m, n, k):
    gen = torch.Generator(device=CUDA).manual_seed(n + m)
    w = torch.randn(n, k, device=CUDA, generator=gen) * 0.02
    x = torch.randn(m, k, device=CUDA, generator=gen).to(torch.bfloat16)
    bias = torch.randn(n, device=CUDA, generator=gen).to(torch.bfloat16)

    q8, s8 = quantize_int8_per_row(w)
    _close(wog.w8a16_gemm(x, q8, s8, bias), x.float() @ (q8.float() * s8[:, None]).t() + bias.float())

    p4, s4, z4 = quantize_int4(w, 128, scale_dtype=torch.bfloat16)
    _close(wog.w4a16_gemm(x, p4, s4, z4, 128), x.float() @ dequantize_int4(p4, s4, z4, 128, k).t())

    f8, sf8 = quantize_fp8_per_row(w)
    w_ref = f8.float() * sf8[:, None]
    x_scale = fp8_scale(x.float().abs().amax()).reshape(1)
    _close(wog.fp8_gemv(x, f8, sf8, x_scale), (quantize_fp8(x, x_scale).float() * x_scale) @ w_ref.t())
    row_scale = fp8_scale(x.float().abs().amax(dim=1, keepdim=True))
    _close(wog.fp8_gemv(x, f8, sf8, None), (quantize_fp8(x, row_scale).float() * row_scale) @ w_ref.t())

    wb = w.to(torch.bfloat16)
    _close(wog.dense_gemv(x, wb, bias), x.float() @ wb.float().t() + bias.float())

    kinds = {key[:4] for key in wog._CHOSEN if (key.n, key.k) == (n, k)}
    assert kinds == {(wog.INT8, 0, n, k), (wog.INT4, 0, n, k), (wog.FP8, 1, n, k), (wog.FP8, 2, n, k),
                     (wog.DENSE, 0, n, k)}


def test_tile_choices_survive_a_saved_engine_round_trip():
    """The choices timed here, exported as a saved engine keeps them and adopted back, give the
    same tiles and the same results without timing again."""
    from tritium.kernels import tile_choices

    gen = torch.Generator(device=CUDA).manual_seed(5)
    w = torch.randn(4096, 4096, device=CUDA, generator=gen) * 0.02
    f8, sf8 = quantize_fp8_per_row(w)
    x = torch.randn(1, 4096, device=CUDA, generator=gen).to(torch.bfloat16)
    x_scale = fp8_scale(x.float().abs().amax()).reshape(1)
    y = wog.fp8_gemv(x, f8, sf8, x_scale)  # timed now (or earlier in this process)
    saved = tile_choices.export_choices(CUDA)
    before = dict(wog._CHOSEN)
    wog._CHOSEN.clear()
    try:
        assert tile_choices.import_choices(saved, CUDA) == len(saved["choices"]) > 0
        assert {k: v for k, v in wog._CHOSEN.items()} == {k: v for k, v in before.items() if k.device.type == "cuda"}
        assert torch.equal(wog.fp8_gemv(x, f8, sf8, x_scale), y)
    finally:
        wog._CHOSEN.update(before)


@pytest.mark.parametrize("gemv", [False, True])
def test_fused_split_sum_at_real_sizes_under_graph_replays(monkeypatch, gemv):
    """The in-kernel split-K sum at the down projection's size (split K): the same output as the
    second-kernel sum, also when replayed from a CUDA graph several times (the counters reset)."""
    n, k, m = 4096, 14336, 1
    gen = torch.Generator(device=CUDA).manual_seed(3)
    f8, sf8 = quantize_fp8_per_row(torch.randn(n, k, device=CUDA, generator=gen) * 0.02)
    x = torch.randn(m, k, device=CUDA, generator=gen).to(torch.bfloat16)
    x_scale = fp8_scale(x.float().abs().amax()).reshape(1)
    config = wog.GemvConfig(64, 256, 8, gemv=gemv)
    monkeypatch.setenv("TRITIUM_FUSED_SPLIT_SUM", "0")  # the second kernel sums
    want = wog.fp8_gemv(x, f8, sf8, x_scale, config=config)
    monkeypatch.setenv("TRITIUM_FUSED_SPLIT_SUM", "1")
    assert torch.equal(wog.fp8_gemv(x, f8, sf8, x_scale, config=config), want)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = wog.fp8_gemv(x, f8, sf8, x_scale, config=config)
    for _ in range(3):
        out.zero_()
        graph.replay()
        assert torch.equal(out, want)


@pytest.mark.parametrize("config,dtype", [(wog.GemvConfig(64, 128, 4, gemv=True, int4_magic=True), torch.bfloat16),
                                          (wog.GemvConfig(64, 128, 4, int4_magic=True), torch.bfloat16),
                                          (wog.GemvConfig(64, 128, 4, int4_asm=True), torch.bfloat16),
                                          (wog.GemvConfig(128, 128, 8, int4_asm=True), torch.bfloat16),
                                          (wog.GemvConfig(64, 128, 4, int4_asm=True), torch.float16)])
@pytest.mark.parametrize("rows", [1, 8])
def test_int4_fast_nibble_conversions_at_real_sizes(config, dtype, rows):
    """int4 nibbles turned into floats by the exponent trick, or into 16-bit (q - zero) pairs by
    inline PTX, give the dequantized product."""
    n, k = 14336 * 2, 4096
    gen = torch.Generator(device=CUDA).manual_seed(5)
    w = torch.randn(n, k, device=CUDA, generator=gen) * 0.02
    x = torch.randn(1 if config.gemv else rows, k, device=CUDA, generator=gen).to(dtype)
    p4, s4, z4 = quantize_int4(w, 128, scale_dtype=dtype)
    assert wog.asm_nibbles(config, wog.INT4, dtype) == config.int4_asm  # the PTX path is the one tested
    _close(wog.w4a16_gemm(x, p4, s4, z4, 128, config=config), x.float() @ dequantize_int4(p4, s4, z4, 128, k).t())


@pytest.mark.parametrize("n, k", [(28672, 4096), (4096, 14336)])
def test_one_pass_dequantization_at_real_sizes(n, k):
    """Prefill batches of weight-only layers: the dense weight from one Triton pass equals the torch
    reference bit for bit (int4 groups of 128, int8 rows)."""
    from tritium.kernels import dequant

    gen = torch.Generator(device=CUDA).manual_seed(n)
    w = torch.randn(n, k, device=CUDA, generator=gen) * 0.02
    packed, scale, zero = quantize_int4(w, 128, scale_dtype=torch.bfloat16)
    assert torch.equal(dequant.dequantize_int4(packed, scale, zero, 128, k, torch.bfloat16),
                       dequantize_int4(packed, scale, zero, 128, k, torch.bfloat16))
    q, s = quantize_int8_per_row(w)
    assert torch.equal(dequant.dequantize_int8_rows(q, s, torch.bfloat16),
                       q.to(torch.bfloat16) * s.to(torch.bfloat16)[:, None])

"""Quantization on the GPU (issue 9), run on an H200 by scripts/gpu_check.sh / the lead:

- every linear method at Llama-3.1-8B sizes (q/o 4096x4096, gate/up 14336x4096, down 4096x14336)
  and batches 1 / 16 / 256: the GPU path (Triton weight-only kernels up to 64 rows, dequantize +
  cuBLAS above; torch._scaled_mm for FP8; torch._int_mm for W8A8) against the same arithmetic in
  float64 and against the float layer (tests/quantization/linear_cases.py: the CPU tests run the
  same checks at small sizes);
- FP8 / INT8 KV cache: the fused RoPE + cache write, decode and prefill attention at real sizes
  against torch references (tests/kernels/test_kv_quant_kernels.py's checks);
- a tiny random Llama built with each algorithm on cuda (calibration included), saved, loaded back
  on cuda (same tokens) and on the CPU (same logits within kernel tolerance: the CPU path emulates
  the same arithmetic), and within the quantization error of the unquantized model.
"""
from __future__ import annotations

import pytest
import torch

from tests.kernels.test_kv_quant_kernels import KV_DTYPES, check_decode, check_prefill, check_quantized_write
from tests.quantization.engine_cases import (ENGINE_CASES, FLOAT_LOGITS_TOL, build_save_reload, generate,
                                             logits_rel_error, prompts, quant_config, tokens)
from tests.quantization.linear_cases import ALGOS, EMULATED_TOL, FLOAT_TOL, emulated_reference, quantized_linear, rel_error

CUDA = torch.device("cuda")
# GPU vs CPU context logits of the same saved engine. FP8 activations: Hopper's FP8 tensor cores
# accumulate with less than float32's precision (the first layer's output 8e-5 apart from the CPU's
# float32 product on an H200, 1.6e-7 through the weight-streaming kernel), which flips some FP8
# roundings of the next layers' activations; the tiny random model amplifies them (its FP8 logits
# are 0.13 from the float model's). Measured 2026-11-30: 0.039 (FP8), 0.032 (per token), 0.043
# (with an FP8 KV cache); the same engine with the GEMMs emulated on the GPU: 0.0000 / 0.0018
# (scripts/diag_fp8_engine.py).
GPU_VS_CPU_TOL = {"FP8": 0.08, "FP8_PER_CHANNEL_PER_TOKEN": 0.08}
SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]  # (N, K): q/o, gate (or up), down of Llama-3.1-8B


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("algo", ALGOS)
def test_linear_methods_at_llama_8b_sizes(algo, n, k):
    x_all = torch.randn(256, k, generator=torch.Generator().manual_seed(n + k)).bfloat16()
    layer, w = quantized_linear(algo, n, k, CUDA, torch.bfloat16, calib=x_all.float())
    w_gpu = w.to(CUDA).double()
    for rows in (1, 16, 256):
        x = x_all[:rows].to(CUDA)
        y = layer(x)
        assert y.shape == (rows, n) and y.dtype == torch.bfloat16 and torch.isfinite(y).all()
        emulated = rel_error(y, emulated_reference(layer, algo, x))
        assert emulated <= EMULATED_TOL[torch.bfloat16], f"{algo} {n}x{k} rows={rows}: {emulated:.2e}"
        vs_float = rel_error(y, x.double() @ w_gpu.t())
        assert vs_float <= FLOAT_TOL[algo], f"{algo} {n}x{k} rows={rows}: {vs_float:.3f} vs float"


def test_fp8_needs_no_float32_rowwise_output():
    """FP8 per-token on a float32 model with a large batch (the row-wise _scaled_mm only writes
    bfloat16): still the emulated arithmetic."""
    x = torch.randn(300, 512, generator=torch.Generator().manual_seed(3))
    layer, _ = quantized_linear("FP8_PER_CHANNEL_PER_TOKEN", 256, 512, CUDA, torch.float32, calib=x)
    y = layer(x.to(CUDA))
    assert y.dtype == torch.float32
    assert rel_error(y, emulated_reference(layer, "FP8_PER_CHANNEL_PER_TOKEN", x.to(CUDA))) <= 1e-2


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_quantized_kv_write_at_real_sizes(kv_dtype):
    check_quantized_write(CUDA, kv_dtype, torch.bfloat16, t=512, num_heads=32, kvh=8, d=128, block_size=32)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
@pytest.mark.parametrize("batch,ctx", [(1, 4096), (64, 700)])
def test_quantized_kv_decode_at_real_sizes(kv_dtype, batch, ctx):
    from tritium.kernels.decode_attention import num_kv_splits

    seq_lens = [ctx - 7 * i for i in range(batch)]
    check_decode(CUDA, kv_dtype, num_kv_splits(batch, 8, ctx), seq_lens=seq_lens, num_heads=32, kvh=8, d=128,
                 block_size=16, dtype=torch.bfloat16)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_quantized_kv_prefill_at_real_sizes(kv_dtype):
    check_prefill(CUDA, kv_dtype, shapes=((0, 1024), (3000, 500), (17, 1)), num_heads=32, kvh=8, d=128,
                  block_size=16, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def float_reference(tiny_llama):
    return generate(tiny_llama, "cpu", prompts(), dtype="float32")


@pytest.mark.parametrize("algo,kv", ENGINE_CASES)
def test_quantized_engine_on_gpu_saves_loads_and_matches_the_cpu_path(tiny_llama, float_reference, tmp_path,
                                                                      algo, kv):
    engine = str(tmp_path / "engine")
    run = build_save_reload(tiny_llama, "cuda", quant_config(algo, kv), engine)
    assert tokens(run.loaded) == tokens(run.built)  # the saved engine is the built one
    on_cpu = generate(engine, "cpu", prompts())  # same quantized tensors, the CPU's emulated arithmetic
    assert logits_rel_error(run.built, on_cpu) <= GPU_VS_CPU_TOL.get(algo, 1e-2)
    assert logits_rel_error(run.built, float_reference) <= FLOAT_LOGITS_TOL[algo]


@pytest.mark.parametrize("algo,kv", [(None, None), ("FP8", "FP8"), ("W4A16", None)])
def test_dry_run_agrees_with_the_start_up_plan(algo, kv):
    """`tritium build --dry-run`'s estimate (config.json alone) against the plan the engine makes
    at start on this GPU (measured free memory and activation peaks): the same weights and KV
    bytes per token, KV tokens within 10%."""
    from tritium import BuildConfig, KvCacheConfig
    from tritium.bench.model_shapes import resolve_model_arg
    from tritium.llm.llm import LLM
    from tritium.quantization import QuantConfig
    from tritium.worker.memory_estimate import estimate_memory

    model = resolve_model_arg("qwen3-0.6b", "dummy")
    quant = QuantConfig(quant_algo=algo, kv_cache_quant_algo=kv) if algo or kv else None
    build = BuildConfig(max_batch_size=512, max_num_tokens=8192, max_seq_len=32768)  # the cache, not the cap, decides
    kv_config = KvCacheConfig()
    torch.cuda.empty_cache()
    free_before = torch.cuda.mem_get_info()[0]
    with LLM(model, load_format="dummy", dtype="bfloat16", build_config=build, kv_cache_config=kv_config,
             quant_config=quant) as llm:
        actual = llm._parts.memory_plan
        config = llm.model_config
    estimate = estimate_memory(config, free_before, build, kv_config, quant)
    assert estimate["weights_bytes"] == actual["weights_bytes"]
    assert estimate["kv_bytes_per_token"] == actual["kv_bytes_per_token"]
    assert estimate["kv_cache_tokens"] == pytest.approx(actual["kv_cache_tokens"], rel=0.1)
    assert estimate["sequences_at_max_seq_len"] == pytest.approx(actual["sequences_at_max_seq_len"], rel=0.1, abs=1)


def test_the_activation_profile_covers_a_step_of_many_short_prompts():
    """With max_seq_len far below max_num_tokens a step still carries max_num_tokens tokens (32
    prompts of 256): the profiled activation peak is that of a full 8192-token step (as profiled
    with one long prompt), not of one 256-token prompt, and the dry-run estimate agrees."""
    from tritium import BuildConfig, KvCacheConfig
    from tritium.bench.model_shapes import resolve_model_arg
    from tritium.llm.llm import LLM
    from tritium.worker.memory_estimate import estimate_memory

    model = resolve_model_arg("qwen3-0.6b", "dummy")
    peaks, estimates = {}, {}
    for seq_len in (256, 8192):
        build = BuildConfig(max_batch_size=64, max_num_tokens=8192, max_seq_len=seq_len)
        torch.cuda.empty_cache()
        free_before = torch.cuda.mem_get_info()[0]
        with LLM(model, load_format="dummy", dtype="bfloat16", build_config=build) as llm:
            peaks[seq_len] = llm._parts.memory_plan["activation_bytes"]
            estimates[seq_len] = estimate_memory(llm.model_config, free_before, build, KvCacheConfig())["activation_bytes"]
    assert peaks[256] == pytest.approx(peaks[8192], rel=0.25), peaks  # the same token count; attention differs
    assert estimates[256] == pytest.approx(estimates[8192], rel=0.01), estimates
    assert peaks[256] == pytest.approx(estimates[256], rel=0.5), (peaks, estimates)

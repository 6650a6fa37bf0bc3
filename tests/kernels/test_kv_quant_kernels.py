"""FP8 / INT8 KV cache in the Triton kernels: the fused RoPE + cache write stores exactly what the
torch backend's write_kv stores, and decode / prefill attention over a quantized cache equal a
float64 reference on the dequantized cache (per-head scales != 1)."""
from __future__ import annotations

import pytest
import torch

from tests.kernels.paged_cache import dense_kv, random_paged_cache, reference_attention
from tritium.attention.torch_backend import write_kv
from tritium.kernels.decode_attention import paged_decode_attention
from tritium.kernels.prefill_attention import paged_prefill_attention
from tritium.kernels.rope_kv_write import rope_and_write_kv
from tritium.quantization.kv_cache import dequantize_kv, quantize_kv

KV_DTYPES = [torch.float8_e4m3fn, torch.int8]


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def head_scales(num_kv_heads: int, kv_dtype) -> torch.Tensor:
    """[2, kvh] dequant multipliers that map values of magnitude ~4 onto the format's range."""
    base = 4.0 / (448.0 if kv_dtype == torch.float8_e4m3fn else 127.0)
    return base * (1.0 + torch.arange(2 * num_kv_heads, dtype=torch.float32).reshape(2, num_kv_heads) / 4)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_write_equals_torch_write_kv(device, kv_dtype, dtype):
    t, kvh, d = 5, 2, 64
    q = randn(t, 4, d, seed=1).to(dtype).to(device)
    k = (3 * randn(t, kvh, d, seed=2)).to(dtype).to(device)
    v = (3 * randn(t, kvh, d, seed=3)).to(dtype).to(device)
    scale = head_scales(kvh, kv_dtype).to(device)
    slots = torch.tensor([0, 17, -1, 31, 8], device=device)
    cache = torch.zeros(2, 2, 16, kvh, d, dtype=kv_dtype, device=device)
    rope_and_write_kv(q, k, v, None, cache, slots, scale)
    expected = torch.zeros_like(cache)
    keep = slots >= 0
    write_kv(expected, k[keep], v[keep], slots[keep], scale)
    if kv_dtype == torch.int8:
        assert torch.equal(cache, expected)
    else:  # same rounding; compare the values (fp8 has no torch.equal on every build)
        assert torch.equal(cache.float(), expected.float())


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
@pytest.mark.parametrize("num_splits", [1, 2])
def test_decode_over_quantized_cache(device, kv_dtype, num_splits):
    num_heads, kvh, d, bs = 4, 2, 64, 16
    seq_lens = [9, 70]
    cache, table = random_paged_cache(seq_lens, kvh, d, bs, torch.float32, device, seed=4)
    scale = head_scales(kvh, kv_dtype).to(device)
    qcache = quantize_kv(cache * 3, scale[:, None, None, :, None], kv_dtype)
    deq = dequantize_kv(qcache, scale[:, None, None, :, None], torch.float32)
    q = randn(len(seq_lens), num_heads, d, seed=5).to(device)
    out = paged_decode_attention(q, qcache, table, torch.tensor(seq_lens, dtype=torch.int32, device=device),
                                 d ** -0.5, num_splits=num_splits, kv_scale=scale)
    for s, n in enumerate(seq_lens):
        k, v = dense_kv(deq, table[s], n)
        ref = reference_attention(q[s:s + 1], k, v, d ** -0.5, torch.tensor([n - 1], device=device))
        torch.testing.assert_close(out[s:s + 1].double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_prefill_over_quantized_cache(device, kv_dtype):
    num_heads, kvh, d, bs = 4, 1, 64, 16
    shapes = [(0, 20), (33, 5)]
    seq_lens = [c + n for c, n in shapes]
    cache, table = random_paged_cache(seq_lens, kvh, d, bs, torch.float32, device, seed=6)
    scale = head_scales(kvh, kv_dtype).to(device)
    qcache = quantize_kv(cache * 3, scale[:, None, None, :, None], kv_dtype)
    deq = dequantize_kv(qcache, scale[:, None, None, :, None], torch.float32)
    q_lens = [n for _, n in shapes]
    qsl = torch.tensor([0, q_lens[0], sum(q_lens)], dtype=torch.int32, device=device)
    q = randn(sum(q_lens), num_heads, d, seed=7).to(device)
    out = paged_prefill_attention(q, qcache, table, qsl, torch.tensor(seq_lens, dtype=torch.int32, device=device),
                                  max(q_lens), d ** -0.5, kv_scale=scale)
    for s, (context, n) in enumerate(shapes):
        k, v = dense_kv(deq, table[s], context + n)
        rows = slice(int(qsl[s]), int(qsl[s + 1]))
        ref = reference_attention(q[rows], k, v, d ** -0.5, torch.arange(context, context + n, device=device))
        torch.testing.assert_close(out[rows].double(), ref, atol=1e-5, rtol=1e-5)

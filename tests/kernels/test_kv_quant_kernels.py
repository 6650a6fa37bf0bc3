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


def check_quantized_write(device, kv_dtype, dtype, t=5, num_heads=4, kvh=2, d=64, block_size=16, seed=1):
    """The fused write stores exactly what write_kv stores (slot -1 skipped)."""
    q = randn(t, num_heads, d, seed=seed).to(dtype).to(device)
    k = (3 * randn(t, kvh, d, seed=seed + 1)).to(dtype).to(device)
    v = (3 * randn(t, kvh, d, seed=seed + 2)).to(dtype).to(device)
    scale = head_scales(kvh, kv_dtype).to(device)
    num_blocks = -(-2 * t // block_size) + 1
    slots = torch.randperm(num_blocks * block_size, generator=torch.Generator().manual_seed(seed))[:t]
    slots[t // 2] = -1  # a padding token
    slots = slots.to(device)
    cache = torch.zeros(2, num_blocks, block_size, kvh, d, dtype=kv_dtype, device=device)
    rope_and_write_kv(q, k, v, None, cache, slots, scale)
    expected = torch.zeros_like(cache)
    keep = slots >= 0
    write_kv(expected, k[keep], v[keep], slots[keep], scale)
    if kv_dtype == torch.int8:
        assert torch.equal(cache, expected)
    else:  # same rounding; compare the values (fp8 has no torch.equal on every build)
        assert torch.equal(cache.float(), expected.float())


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_write_equals_torch_write_kv(device, kv_dtype, dtype):
    check_quantized_write(device, kv_dtype, dtype)


def quantized_cache(seq_lens, kvh, d, block_size, kv_dtype, device, seed):
    """A random paged cache quantized with per-head scales != 1: (cache, its float32
    dequantization, block table, scales [2, kvh])."""
    cache, table = random_paged_cache(seq_lens, kvh, d, block_size, torch.float32, device, seed=seed)
    scale = head_scales(kvh, kv_dtype).to(device)
    qcache = quantize_kv(cache * 3, scale[:, None, None, :, None], kv_dtype)
    return qcache, dequantize_kv(qcache, scale[:, None, None, :, None], torch.float32), table, scale


def assert_close_to(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """float32 kernels: element-wise 1e-5; 16-bit q / output: 1% of the reference's norm."""
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    else:
        assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-2


def check_decode(device, kv_dtype, num_splits, seq_lens=(9, 70), num_heads=4, kvh=2, d=64, block_size=16,
                 dtype=torch.float32, heads_fastest=False):
    """Decode attention over a quantized cache equals float64 attention over its dequantization."""
    qcache, deq, table, scale = quantized_cache(list(seq_lens), kvh, d, block_size, kv_dtype, device, seed=4)
    q = randn(len(seq_lens), num_heads, d, seed=5).to(dtype).to(device)
    out = paged_decode_attention(q, qcache, table, torch.tensor(seq_lens, dtype=torch.int32, device=device),
                                 d ** -0.5, num_splits=num_splits, kv_scale=scale, heads_fastest=heads_fastest)
    for s in sorted({0, len(seq_lens) - 1}):
        k, v = dense_kv(deq, table[s], seq_lens[s])
        ref = reference_attention(q[s:s + 1], k, v, d ** -0.5, torch.tensor([seq_lens[s] - 1], device=device))
        assert_close_to(out[s:s + 1], ref, dtype)


def check_prefill(device, kv_dtype, shapes=((0, 20), (33, 5)), num_heads=4, kvh=1, d=64, block_size=16,
                  dtype=torch.float32):
    """Prefill attention (shapes: (cached context, new tokens) per sequence) over a quantized cache."""
    seq_lens = [c + n for c, n in shapes]
    qcache, deq, table, scale = quantized_cache(seq_lens, kvh, d, block_size, kv_dtype, device, seed=6)
    q_lens = [n for _, n in shapes]
    qsl = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0).int().to(device)
    q = randn(sum(q_lens), num_heads, d, seed=7).to(dtype).to(device)
    out = paged_prefill_attention(q, qcache, table, qsl, torch.tensor(seq_lens, dtype=torch.int32, device=device),
                                  max(q_lens), d ** -0.5, kv_scale=scale)
    for s, (context, n) in enumerate(shapes):
        k, v = dense_kv(deq, table[s], context + n)
        rows = slice(int(qsl[s]), int(qsl[s + 1]))
        ref = reference_attention(q[rows], k, v, d ** -0.5, torch.arange(context, context + n, device=device))
        assert_close_to(out[rows], ref, dtype)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
@pytest.mark.parametrize("num_splits,heads_fastest", [(1, False), (2, False), (2, True)])
def test_decode_over_quantized_cache(device, kv_dtype, num_splits, heads_fastest):
    check_decode(device, kv_dtype, num_splits, heads_fastest=heads_fastest)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_prefill_over_quantized_cache(device, kv_dtype):
    check_prefill(device, kv_dtype)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_head_dim_below_the_tile_over_quantized_cache(device, kv_dtype):
    """A head dim that is not a power of two (80: tiles of 128 columns) in decode and prefill."""
    check_decode(device, kv_dtype, 2, d=80)
    check_prefill(device, kv_dtype, d=80)


@pytest.mark.parametrize("d", [64, 80])
@pytest.mark.parametrize("num_splits", [1, 2])
def test_fp8_cache_read_in_pairs(device, monkeypatch, d, num_splits):
    """TRITIUM_FP8_KV_PAIRS=1 (pairs everywhere; by default only split decodes read pairs, as
    test_decode_over_quantized_cache's do): the FP8 cache read as 16-bit pairs, converted, and put back in place
    (paged_kv._load_e4m3_pairs; in the interpreter by Triton's byte conversion, compiled by one PTX
    conversion a pair), pairs past a head dim below the tile masked: the same attention."""
    from tritium.kernels.paged_kv import FP8_PAIRS, attention_kv_mode

    monkeypatch.setenv("TRITIUM_FP8_KV_PAIRS", "1")
    assert attention_kv_mode(torch.empty(1, dtype=torch.float8_e4m3fn)) == FP8_PAIRS.value
    assert attention_kv_mode(torch.empty(1, dtype=torch.int8)) == 2
    check_decode(device, torch.float8_e4m3fn, num_splits, d=d)
    check_prefill(device, torch.float8_e4m3fn, d=d)


def test_fp8_pair_policy(monkeypatch, request):
    """By default ("auto") only a decode split over the keys reads an FP8 cache in pairs (faster at
    batch 1, slower in large batches' two-warp programs on an H200); 1 everywhere, 0 never; the
    pairs' PTX conversion needs compute capability 8.9, older GPUs read bytes; other values are an
    error naming the variable."""
    from types import SimpleNamespace

    from tritium.kernels.paged_kv import FP8_PAIRS, attention_kv_mode, converts_e4m3_pairs

    converts_e4m3_pairs.cache_clear()  # the capabilities below are made up: none may outlive the test
    request.addfinalizer(converts_e4m3_pairs.cache_clear)
    pairs = FP8_PAIRS.value
    cache = SimpleNamespace(dtype=torch.float8_e4m3fn, is_cuda=True, device="cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    monkeypatch.delenv("TRITIUM_FP8_KV_PAIRS", raising=False)
    assert [attention_kv_mode(cache, split_decode=s) for s in (False, True)] == [1, pairs]
    assert attention_kv_mode(torch.empty(1, dtype=torch.int8), split_decode=True) == 2
    monkeypatch.setenv("TRITIUM_FP8_KV_PAIRS", "1")
    assert [attention_kv_mode(cache, split_decode=s) for s in (False, True)] == [pairs, pairs]
    monkeypatch.setenv("TRITIUM_FP8_KV_PAIRS", "0")
    assert [attention_kv_mode(cache, split_decode=s) for s in (False, True)] == [1, 1]
    monkeypatch.setenv("TRITIUM_FP8_KV_PAIRS", "1")
    for capability, mode in (((8, 0), 1), ((8, 9), pairs), ((9, 0), pairs)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        converts_e4m3_pairs.cache_clear()  # asked once a device: another GPU here
        assert attention_kv_mode(cache) == mode
    monkeypatch.setenv("TRITIUM_FP8_KV_PAIRS", "yes")
    with pytest.raises(ValueError, match="TRITIUM_FP8_KV_PAIRS"):
        attention_kv_mode(cache)

"""A mixed step through the Triton attention backend: its leading one-token requests
(AttentionMetadata.num_decodes) go through the decode kernel, the rest through the prefill
kernel, into one output; against the float64 reference, on 16-bit / float32 and FP8 / int8 caches,
and equal to the whole step through the prefill kernel alone."""
from __future__ import annotations

import pytest
import torch

from tests.kernels.paged_cache import dense_kv, random_paged_cache, reference_attention
from tests.kernels.test_kv_quant_kernels import assert_close_to, quantized_cache
from tritium.attention.backend import AttentionMetadata
from tritium.attention.triton_backend import TritonAttentionBackend

# (cached context, new tokens): two decodes first, then a fresh prompt, a chunk after a prefix
# and a decode-like one-token chunk that is not among the leading ones.
SHAPES = [(40, 1), (130, 1), (0, 23), (5, 70), (17, 1)]


def metadata(shapes, table, device, num_decodes: int) -> AttentionMetadata:
    q_lens = [n for _, n in shapes]
    seq_lens = [c + n for c, n in shapes]
    qsl = [0] + torch.tensor(q_lens).cumsum(0).tolist()
    return AttentionMetadata(
        num_actual_tokens=qsl[-1],
        query_start_loc=torch.tensor(qsl, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_tables=table,
        slot_mapping=torch.full((qsl[-1],), -1, dtype=torch.int64, device=device),  # the cache holds the keys
        max_query_len=max(q_lens), max_seq_len=max(seq_lens),
        query_start_loc_cpu=qsl, seq_lens_cpu=seq_lens, num_decodes=num_decodes)


def run_step(cache, table, q, kv_scale, num_decodes):
    num_kv_heads, head_dim = cache.shape[3], cache.shape[4]
    kv = torch.zeros(q.shape[0], num_kv_heads, head_dim, dtype=q.dtype, device=q.device)  # not written (slot -1)
    meta = metadata(SHAPES, table, q.device, num_decodes)
    backend = TritonAttentionBackend(num_sms=4)
    return backend.forward(q.clone(), kv, kv.clone(), cache, meta, head_dim ** -0.5, kv_scale=kv_scale)


@pytest.mark.parametrize("kv_dtype", [None, torch.float8_e4m3fn, torch.int8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixed_step_splits_decodes_from_prefills(device, kv_dtype, dtype):
    num_heads, kvh, d, block_size = 8, 2, 64, 16
    seq_lens = [c + n for c, n in SHAPES]
    if kv_dtype is None:
        cache, table = random_paged_cache(seq_lens, kvh, d, block_size, dtype, device, seed=8)
        dense, kv_scale = cache, None
    else:
        cache, dense, table, kv_scale = quantized_cache(seq_lens, kvh, d, block_size, kv_dtype, device, seed=8)
    total = sum(n for _, n in SHAPES)
    q = torch.randn(total, num_heads, d, generator=torch.Generator().manual_seed(9)).to(dtype).to(device)

    out = run_step(cache, table, q, kv_scale, num_decodes=2)
    start = 0
    for s, (context, n) in enumerate(SHAPES):
        k, v = dense_kv(dense, table[s], context + n)
        ref = reference_attention(q[start:start + n], k, v, d ** -0.5, torch.arange(context, context + n, device=device))
        assert_close_to(out[start:start + n], ref, dtype)
        start += n
    prefill_only = run_step(cache, table, q, kv_scale, num_decodes=0)
    assert_close_to(out, prefill_only.double(), dtype)


def test_the_split_can_be_switched_off(device, monkeypatch):
    """TRITIUM_MIXED_DECODE_SPLIT=0: the whole step through the prefill kernel, same output."""
    from tritium.attention import triton_backend

    seq_lens = [c + n for c, n in SHAPES]
    cache, table = random_paged_cache(seq_lens, 2, 64, 16, torch.float32, device, seed=8)
    q = torch.randn(sum(n for _, n in SHAPES), 8, 64, generator=torch.Generator().manual_seed(9)).to(device)
    calls = []
    decode = triton_backend.paged_decode_attention
    monkeypatch.setattr(triton_backend, "paged_decode_attention", lambda *a, **k: calls.append(1) or decode(*a, **k))
    split = run_step(cache, table, q, None, num_decodes=2)
    assert calls == [1]
    monkeypatch.setenv("TRITIUM_MIXED_DECODE_SPLIT", "0")
    whole = run_step(cache, table, q, None, num_decodes=2)
    assert calls == [1]  # not called again
    assert_close_to(whole, split.double(), torch.float32)

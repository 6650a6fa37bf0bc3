"""Triton paged attention (decode split-KV and prefill/extend) against a float64 torch reference
on random caches with shuffled blocks: block sizes 16/32, head dims 64/128 (and a padded 80),
GQA ratios 1/4/8, empty padding rows, cached prefixes and mixed batches."""
from __future__ import annotations

import pytest
import torch

from tests.kernels.paged_cache import dense_kv, random_paged_cache, reference_attention
from tritium.kernels.decode_attention import num_kv_splits, paged_decode_attention
from tritium.kernels.prefill_attention import paged_prefill_attention

CASES = [  # (num_heads, num_kv_heads, head_dim, block_size)
    (4, 4, 64, 16),
    (8, 2, 128, 32),
    (8, 1, 64, 16),
    (4, 1, 80, 16),
]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim,block_size", CASES)
@pytest.mark.parametrize("num_splits,heads_fastest", [(1, False), (4, False), (4, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_matches_reference(device, num_heads, num_kv_heads, head_dim, block_size, num_splits, heads_fastest,
                                  dtype):
    seq_lens = [1, 37, 130, 0]  # the last is a padding row: its output must be zeros
    cache, table = random_paged_cache(seq_lens, num_kv_heads, head_dim, block_size, dtype, device)
    q = torch.randn(len(seq_lens), num_heads, head_dim, generator=torch.Generator().manual_seed(1)).to(dtype).to(device)
    scale = head_dim ** -0.5
    out = torch.full_like(q, float("nan"))  # every element must be written
    paged_decode_attention(q, cache, table, torch.tensor(seq_lens, dtype=torch.int32, device=device), scale,
                           num_splits=num_splits, out=out, heads_fastest=heads_fastest)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for s, n in enumerate(seq_lens):
        if n == 0:
            assert torch.equal(out[s], torch.zeros_like(out[s]))
            continue
        k, v = dense_kv(cache, table[s], n)
        ref = reference_attention(q[s:s + 1], k, v, scale, torch.tensor([n - 1], device=device))
        assert rel_err(out[s:s + 1], ref) < tol, (s, n)


def test_split_count_heuristic_fills_the_gpu_and_bounds_splits():
    assert num_kv_splits(1, 8, 4096) == 32  # batch 1: many splits
    assert num_kv_splits(1, 8, 300) == 2  # a short sequence is not split below 128 keys a split
    assert num_kv_splits(64, 8, 4096) == 1  # a big batch fills the GPU by itself
    assert all(num_kv_splits(b, 8, 1 << 20) <= 64 for b in (1, 2, 4))


@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim,block_size", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_matches_reference_with_prefix_and_mixed_batch(device, num_heads, num_kv_heads, head_dim,
                                                               block_size, dtype):
    # (cached prefix, new tokens): a fresh prompt, a chunk after a cached prefix, a decode, a
    # long chunk spanning several query tiles.
    shapes = [(0, 23), (40, 17), (70, 1), (5, 150)]
    seq_lens = [c + n for c, n in shapes]
    cache, table = random_paged_cache(seq_lens, num_kv_heads, head_dim, block_size, dtype, device, seed=2)
    q_lens = [n for _, n in shapes]
    qsl = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32, device=device)
    q = torch.randn(sum(q_lens), num_heads, head_dim, generator=torch.Generator().manual_seed(3)).to(dtype).to(device)
    scale = head_dim ** -0.5
    out = paged_prefill_attention(q, cache, table, qsl, torch.tensor(seq_lens, dtype=torch.int32, device=device),
                                  max(q_lens), scale)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for s, (context, n) in enumerate(shapes):
        k, v = dense_kv(cache, table[s], context + n)
        rows = slice(int(qsl[s]), int(qsl[s + 1]))
        ref = reference_attention(q[rows], k, v, scale, torch.arange(context, context + n, device=device))
        assert rel_err(out[rows], ref) < tol, (s, context, n)

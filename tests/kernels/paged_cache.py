"""Random paged KV caches and dense torch references for the attention kernel tests."""
from __future__ import annotations

import torch


def random_paged_cache(seq_lens: list[int], num_kv_heads: int, head_dim: int, block_size: int,
                       dtype: torch.dtype, device, spare_blocks: int = 3, seed: int = 0):
    """A cache [2, blocks, block_size, kvh, d] of random values, sequences on shuffled blocks.
    Returns (cache, block_tables [S, max_blocks] int32)."""
    gen = torch.Generator().manual_seed(seed)
    need = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(need) + spare_blocks
    cache = torch.randn(2, num_blocks, block_size, num_kv_heads, head_dim, generator=gen).to(dtype).to(device)
    perm = torch.randperm(num_blocks, generator=gen)
    table = torch.zeros(len(seq_lens), max(max(need), 1), dtype=torch.int32)
    used = 0
    for s, n in enumerate(need):
        table[s, :n] = perm[used:used + n].int()
        used += n
    return cache, table.to(device)


def dense_kv(cache: torch.Tensor, table_row: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence's first seq_len keys and values, each [seq_len, kvh, d] float64."""
    block_size = cache.shape[2]
    pos = torch.arange(seq_len, device=cache.device)
    blocks = table_row.long()[pos // block_size]
    return cache[0, blocks, pos % block_size].double(), cache[1, blocks, pos % block_size].double()


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                        q_positions: torch.Tensor) -> torch.Tensor:
    """q: [n, H, d]; k, v: [L, kvh, d]; query i sees keys 0..q_positions[i]. float64 [n, H, d]."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # [L, H, d]
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,lhd->hnl", q.double(), k) * scale  # [H, n, L]
    visible = torch.arange(k.shape[0], device=q.device)[None, :] <= q_positions[:, None]  # [n, L]
    scores = scores.masked_fill(~visible[None], float("-inf"))
    return torch.einsum("hnl,lhd->nhd", scores.softmax(-1), v)

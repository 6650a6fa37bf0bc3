"""Chained block hashes: the identity of a full KV block is its tokens AND everything before it.

    hash(block i) = hash((hash(block i-1), tuple(tokens of block i)))      hash(block -1) = None

so equal tokens after a different prefix give a different hash (their KV differs). Only full
blocks are hashed. Python's hash of ints and tuples is not salted per process, so hashes agree
across runs and processes.
"""
from __future__ import annotations

from typing import Optional, Sequence

from tritium.core.request import Request


def hash_block_tokens(parent_hash: Optional[int], token_ids: Sequence[int]) -> int:
    return hash((parent_hash, tuple(token_ids)))


def update_block_hashes(request: Request, block_size: int) -> list[int]:
    """Extend request.block_hashes to cover every full block of request.all_token_ids.

    Incremental: already hashed blocks are not rehashed (token ids only ever grow)."""
    hashes = request.block_hashes
    tokens = request.all_token_ids
    num_full_blocks = len(tokens) // block_size
    parent = hashes[-1] if hashes else None
    for i in range(len(hashes), num_full_blocks):
        parent = hash_block_tokens(parent, tokens[i * block_size:(i + 1) * block_size])
        hashes.append(parent)
    return hashes

"""Per-request block lists on top of the BlockPool: prefix match, allocate_slots(), free().

One request, block_size = 4, 14 known tokens (prompt + outputs), 9 computed before this step,
3 scheduled now (num_new_tokens):

    token positions   0  1  2  3 | 4  5  6  7 | 8  9 10 11 | 12 13
    state             c  c  c  c | c  c  c  c | c  n  n  n | .  .      c computed, n this step,
    req_to_blocks     [ blk 7    ,  blk 2     ,  blk 9     ]            . known, not yet scheduled
    block_hashes      [ h0       ,  h1        ,  h2        ]            (full blocks only)
    cached            [ yes      ,  yes       ,  yes       ]            num_cached_blocks = 3

Invariants:
  * len(req_to_blocks[r]) == ceil((num_computed_tokens + num_new_tokens) / block_size) after
    allocate_slots: exactly the blocks holding scheduled tokens, never more.
  * A block is registered in the prefix cache once all of its block_size tokens are computed
    or scheduled in the step being built (the runner writes every layer's KV for the whole step
    before attention reads it, so a hit in the same step is safe). The partial last block is
    never cached.
  * Every reference on a block is held by exactly one entry of one request's block list
    (check_integrity verifies ref_cnt == number of holders).
  * A prefix hit never covers the last known token: the model must compute at least one token
    to produce logits.
"""
from __future__ import annotations

from typing import Optional

from tritium.core.block_pool import BlockPool, KVCacheBlock
from tritium.core.kv_cache_utils import update_block_hashes
from tritium.core.request import Request


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True):
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.block_pool = BlockPool(num_blocks, enable_caching)
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}
        # How many leading blocks of each request have been offered to the prefix cache.
        self.num_cached_blocks: dict[str, int] = {}

    @property
    def num_free_blocks(self) -> int:
        return self.block_pool.num_free_blocks

    @property
    def usage(self) -> float:
        return self.block_pool.usage

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """Longest prefix of the request's full blocks found in the cache, and the tokens they
        cover. No side effects on the pool (allocate_slots takes the references)."""
        params = request.sampling_params
        if not self.enable_caching or params.prompt_logprobs is not None or params.return_context_logits:
            return [], 0  # prompt logprobs and context logits need the logits of every prompt position
        hashes = update_block_hashes(request, self.block_size)
        # At least one token must remain to compute: cap at (num_tokens - 1) // block_size.
        max_hit_blocks = min(len(hashes), (request.num_tokens - 1) // self.block_size)
        blocks: list[KVCacheBlock] = []
        for block_hash in hashes[:max_hit_blocks]:
            block = self.block_pool.get_cached_block(block_hash)
            if block is None:
                break
            blocks.append(block)
        return blocks, len(blocks) * self.block_size

    def allocate_slots(self, request: Request, num_new_tokens: int,
                       new_computed_blocks: Optional[list[KVCacheBlock]] = None
                       ) -> Optional[list[KVCacheBlock]]:
        """Make room for num_new_tokens more tokens after the computed ones.

        new_computed_blocks (from get_computed_blocks) may only be given for a request that holds
        no blocks yet, and request.num_computed_tokens must not include them yet (the scheduler
        sets it after success). Returns the newly allocated blocks (possibly []), or None if the
        pool cannot supply them, in which case nothing changed.
        """
        req_id = request.request_id
        req_blocks = self.req_to_blocks.get(req_id, [])
        if not new_computed_blocks and req_blocks:  # fast path: a running request (decode)
            num_known = request.num_computed_tokens + num_new_tokens
            if num_known <= len(req_blocks) * self.block_size:  # fits in the blocks it holds
                if self.enable_caching:
                    self._cache_full_blocks(request, min(num_known, request.num_tokens))
                return []
        new_computed_blocks = new_computed_blocks or []
        if new_computed_blocks and (req_blocks or request.num_computed_tokens):
            raise ValueError(f"request {req_id}: prefix-hit blocks given for a request that already "
                             f"holds {len(req_blocks)} blocks / {request.num_computed_tokens} computed tokens")
        num_known = (request.num_computed_tokens + len(new_computed_blocks) * self.block_size
                     + num_new_tokens)
        num_required = -(-num_known // self.block_size)
        num_new_blocks = max(0, num_required - len(req_blocks) - len(new_computed_blocks))
        # Hit blocks sitting in the free queue leave it when touched: they are not available.
        num_evictable_hits = sum(1 for b in new_computed_blocks if b.ref_cnt == 0)
        if num_new_blocks > self.block_pool.num_free_blocks - num_evictable_hits:
            return None

        # Touch before allocating so get_new_blocks cannot evict a block we just hit.
        self.block_pool.touch(new_computed_blocks)
        new_blocks = self.block_pool.get_new_blocks(num_new_blocks)
        req_blocks = self.req_to_blocks.setdefault(req_id, req_blocks)
        req_blocks.extend(new_computed_blocks)
        req_blocks.extend(new_blocks)
        if req_id not in self.num_cached_blocks:
            self.num_cached_blocks[req_id] = len(new_computed_blocks)

        if self.enable_caching:
            self._cache_full_blocks(request, min(num_known, request.num_tokens))
        return new_blocks

    def _cache_full_blocks(self, request: Request, num_tokens_done: int) -> None:
        req_id = request.request_id
        num_full = num_tokens_done // self.block_size
        start = self.num_cached_blocks[req_id]
        if num_full <= start:
            return
        hashes = update_block_hashes(request, self.block_size)
        blocks = self.req_to_blocks[req_id]
        self.block_pool.cache_full_blocks(blocks[start:num_full], hashes[start:num_full])
        self.num_cached_blocks[req_id] = num_full

    def free(self, request: Request) -> None:
        """Release the request's blocks, last block first, so that under LRU eviction the tail of
        a sequence goes before its head (heads are the prefixes other requests share)."""
        blocks = self.req_to_blocks.pop(request.request_id, [])
        self.num_cached_blocks.pop(request.request_id, None)
        self.block_pool.free_blocks(reversed(blocks))

    # ---- beam search: beams share blocks through ref counts --------------------------------
    def reparent(self, req_ids: list[str], parents: list[int], old_ids: list[str]) -> None:
        """Beam j (req_ids[j]) takes over the blocks old beam parents[j] (old_ids[parents[j]]) held;
        old beams' blocks nobody takes over are freed. Shared blocks gain one reference per holder
        (a partly filled one is copied before it is written: copy_on_write)."""
        old_lists = [self.req_to_blocks.get(rid, []) for rid in old_ids]
        old_cached = [self.num_cached_blocks.get(rid, 0) for rid in old_ids]
        new_lists = [list(old_lists[p]) for p in parents]
        for blocks in new_lists:  # take the new references first: no kept block reaches ref_cnt 0
            self.block_pool.touch(blocks)
        for rid in old_ids:
            self.block_pool.free_blocks(reversed(self.req_to_blocks.pop(rid, [])))
            self.num_cached_blocks.pop(rid, None)
        for rid, p, blocks in zip(req_ids, parents, new_lists):
            self.req_to_blocks[rid] = blocks
            self.num_cached_blocks[rid] = old_cached[p]

    def shared_write_block(self, request: Request) -> Optional[KVCacheBlock]:
        """The block the request's next token goes into, if other holders share it (a beam's
        partly filled last block after a fork); None when there is none or it is its own."""
        blocks = self.req_to_blocks.get(request.request_id, [])
        index = request.num_computed_tokens // self.block_size
        if index < len(blocks) and blocks[index].ref_cnt > 1:
            return blocks[index]
        return None

    def copy_on_write(self, request: Request) -> Optional[tuple[int, int]]:
        """Give the request its own copy of a shared block about to be written: returns (source,
        destination) block ids for the runner to copy before the step, or None. Needs a free block."""
        block = self.shared_write_block(request)
        if block is None:
            return None
        copy = self.block_pool.get_new_blocks(1)[0]
        self.block_pool.free_blocks([block])
        self.req_to_blocks[request.request_id][request.num_computed_tokens // self.block_size] = copy
        return block.block_id, copy.block_id

    def num_new_blocks(self, request: Request, num_new_tokens: int, num_hit_blocks: int = 0) -> int:
        """Blocks allocate_slots would take from the pool for a request (no copy-on-write)."""
        held = len(self.req_to_blocks.get(request.request_id, [])) + num_hit_blocks
        num_known = request.num_computed_tokens + num_hit_blocks * self.block_size + num_new_tokens
        return max(0, -(-num_known // self.block_size) - held)

    def get_block_ids(self, req_id: str) -> list[int]:
        return [b.block_id for b in self.req_to_blocks.get(req_id, [])]

    def reset_prefix_cache(self) -> None:
        self.block_pool.reset_prefix_cache()

    def check_integrity(self) -> None:
        """Pool invariants, plus: each block's ref_cnt equals the number of request lists
        holding it, and no request holds the same block twice."""
        self.block_pool.check_integrity()
        holders = [0] * self.block_pool.num_blocks
        for req_id, blocks in self.req_to_blocks.items():
            if len({b.block_id for b in blocks}) != len(blocks):
                raise AssertionError(f"KVCacheManager integrity: request {req_id} holds a block twice")
            for b in blocks:
                holders[b.block_id] += 1
        for block in self.block_pool.blocks:
            if block.ref_cnt != holders[block.block_id]:
                raise AssertionError(
                    f"KVCacheManager integrity: block {block.block_id} has ref_cnt {block.ref_cnt} "
                    f"but {holders[block.block_id]} request(s) hold it")

"""KV cache blocks, their O(1) LRU free list, and the pool that owns both plus the prefix cache.

Every block is in exactly one of two states:
    in use:  ref_cnt > 0, not in the free queue
    free:    ref_cnt == 0, in the free queue; it may still carry a block_hash, in which case
             a prefix hit can take it back (touch) until get_new_blocks evicts it.

Free-queue order is the eviction order: get_new_blocks takes from the head, freed blocks are
appended at the tail, so the least recently freed block is reused (and its hash evicted) first.

There is no reserved null block: ids 0..num_blocks-1 are all allocatable. A runner that needs
a scratch slot for padded tokens should allocate it beyond num_blocks.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional


class KVCacheBlock:
    __slots__ = ("block_id", "ref_cnt", "block_hash", "prev_free", "next_free")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: Optional[int] = None  # set while registered in the prefix cache
        # Free-list links; both None exactly when the block is not in the free queue.
        self.prev_free: Optional[KVCacheBlock] = None
        self.next_free: Optional[KVCacheBlock] = None

    def __repr__(self) -> str:
        return f"KVCacheBlock(id={self.block_id}, ref={self.ref_cnt}, hash={self.block_hash})"


class FreeBlockQueue:
    """Doubly linked list of free blocks between two sentinels: O(1) popleft, append, remove."""

    def __init__(self, blocks: Iterable[KVCacheBlock] = ()):
        # Sentinels (id -1) keep every real node's links non-None, so there are no edge cases.
        self.head = KVCacheBlock(-1)
        self.tail = KVCacheBlock(-1)
        self.head.next_free = self.tail
        self.tail.prev_free = self.head
        self.num_free_blocks = 0
        for block in blocks:
            self.append(block)

    def __len__(self) -> int:
        return self.num_free_blocks

    def __iter__(self) -> Iterator[KVCacheBlock]:
        node = self.head.next_free
        while node is not self.tail:
            yield node
            node = node.next_free

    @staticmethod
    def contains(block: KVCacheBlock) -> bool:
        return block.prev_free is not None

    def popleft(self) -> KVCacheBlock:
        if self.num_free_blocks == 0:
            raise ValueError("popleft from an empty free block queue")
        block = self.head.next_free
        self.remove(block)
        return block

    def append(self, block: KVCacheBlock) -> None:
        if self.contains(block):
            raise RuntimeError(f"block {block.block_id} is already in the free queue")
        last = self.tail.prev_free
        last.next_free = block
        block.prev_free = last
        block.next_free = self.tail
        self.tail.prev_free = block
        self.num_free_blocks += 1

    def remove(self, block: KVCacheBlock) -> None:
        if not self.contains(block):
            raise RuntimeError(f"block {block.block_id} is not in the free queue")
        block.prev_free.next_free = block.next_free
        block.next_free.prev_free = block.prev_free
        block.prev_free = block.next_free = None
        self.num_free_blocks -= 1


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool = True):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.free_queue = FreeBlockQueue(self.blocks)
        # One block per hash: a second block with the same contents is simply not registered.
        self.cached_blocks: dict[int, KVCacheBlock] = {}

    # ---- allocation -----------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return self.free_queue.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (0.0 .. 1.0); free cached blocks count as free."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Take num_blocks from the head of the free queue (ref_cnt 1), evicting their hashes."""
        if num_blocks > self.num_free_blocks:
            raise ValueError(f"cannot allocate {num_blocks} blocks, only {self.num_free_blocks} free")
        blocks = []
        for _ in range(num_blocks):
            block = self.free_queue.popleft()
            self._evict(block)
            block.ref_cnt = 1
            blocks.append(block)
        return blocks

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """A prefix hit takes a reference; a free cached block leaves the free queue."""
        for block in blocks:
            if block.ref_cnt == 0:
                self.free_queue.remove(block)
            block.ref_cnt += 1

    def free_blocks(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference each, in the order given; blocks reaching 0 go to the queue tail
        and keep their hash, so a later request can still hit them."""
        for block in blocks:
            if block.ref_cnt <= 0:
                raise RuntimeError(f"double free of block {block.block_id} (ref_cnt {block.ref_cnt})")
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self.free_queue.append(block)

    # ---- prefix cache ---------------------------------------------------------------------
    def cache_full_blocks(self, blocks: Iterable[KVCacheBlock], block_hashes: Iterable[int]) -> None:
        """Register each full block under its chained hash (zip order). A block already
        registered keeps its hash; a hash already owned by another block is not re-registered."""
        if not self.enable_caching:
            return
        for block, block_hash in zip(blocks, block_hashes):
            if block.block_hash is not None:
                if block.block_hash != block_hash:
                    raise RuntimeError(f"block {block.block_id} is cached as {block.block_hash}, "
                                       f"now asked to cache it as {block_hash}")
                continue
            if block_hash in self.cached_blocks:
                continue
            block.block_hash = block_hash
            self.cached_blocks[block_hash] = block

    def get_cached_block(self, block_hash: int) -> Optional[KVCacheBlock]:
        return self.cached_blocks.get(block_hash)

    def reset_prefix_cache(self) -> None:
        """Forget every hash (in-use blocks too: they stay valid, they just can't be hit)."""
        for block in self.cached_blocks.values():
            block.block_hash = None
        self.cached_blocks.clear()

    def _evict(self, block: KVCacheBlock) -> None:
        if block.block_hash is not None:
            del self.cached_blocks[block.block_hash]
            block.block_hash = None

    # ---- invariants -----------------------------------------------------------------------
    def check_integrity(self) -> None:
        """Raise AssertionError naming the first broken invariant; O(num_blocks)."""

        def fail(msg: str) -> None:
            raise AssertionError(f"BlockPool integrity: {msg}")

        ids = [b.block_id for b in self.blocks]
        if len(set(ids)) != len(ids):
            fail(f"duplicate block ids {sorted(i for i in set(ids) if ids.count(i) > 1)}")
        for i, block in enumerate(self.blocks):
            if block.block_id != i:
                fail(f"blocks[{i}] has block_id {block.block_id}")

        # Walk the free list; bound the walk so a cycle is reported instead of hanging.
        queue = self.free_queue
        if queue.head.prev_free is not None or queue.tail.next_free is not None:
            fail("free-list sentinels have outer links")
        in_queue: set[int] = set()
        node = queue.head
        for _ in range(self.num_blocks + 1):
            nxt = node.next_free
            if nxt is None:
                fail(f"free-list link broken after block {node.block_id} (next is None)")
            if nxt.prev_free is not node:
                fail(f"free-list links inconsistent: {node.block_id}.next is {nxt.block_id} "
                     f"but {nxt.block_id}.prev is {getattr(nxt.prev_free, 'block_id', None)}")
            if nxt is queue.tail:
                break
            if not 0 <= nxt.block_id < self.num_blocks or self.blocks[nxt.block_id] is not nxt:
                fail(f"free list holds a block {nxt.block_id} that is not in the pool")
            if nxt.block_id in in_queue:
                fail(f"block {nxt.block_id} appears twice in the free list (cycle)")
            in_queue.add(nxt.block_id)
            node = nxt
        else:
            fail("free list does not reach its tail within num_blocks steps")
        if len(in_queue) != queue.num_free_blocks:
            fail(f"free-list length {len(in_queue)} != num_free_blocks counter {queue.num_free_blocks}")

        for block in self.blocks:
            if block.block_id in in_queue:
                if block.ref_cnt != 0:
                    fail(f"block {block.block_id} is in the free list with ref_cnt {block.ref_cnt}")
            else:
                if block.ref_cnt <= 0:
                    fail(f"block {block.block_id} is not in the free list but has ref_cnt {block.ref_cnt}")
                if block.prev_free is not None or block.next_free is not None:
                    fail(f"block {block.block_id} is out of the free list but still has links")

        if not self.enable_caching and self.cached_blocks:
            fail("prefix caching is off but the hash map is not empty")
        for block_hash, block in self.cached_blocks.items():
            if not 0 <= block.block_id < self.num_blocks or self.blocks[block.block_id] is not block:
                fail(f"hash {block_hash} maps to a block {block.block_id} that is not in the pool")
            if block.block_hash != block_hash:
                fail(f"hash map key {block_hash} points to block {block.block_id} "
                     f"whose block_hash is {block.block_hash}")
        for block in self.blocks:
            if block.block_hash is not None and self.cached_blocks.get(block.block_hash) is not block:
                fail(f"block {block.block_id} carries hash {block.block_hash} but the map does not point to it")

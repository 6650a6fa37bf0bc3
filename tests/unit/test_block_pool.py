import pytest

from tritium.core.block_pool import BlockPool, FreeBlockQueue, KVCacheBlock


def free_ids(pool: BlockPool) -> list[int]:
    return [b.block_id for b in pool.free_queue]


# ---- FreeBlockQueue ------------------------------------------------------------------------

def test_free_queue_popleft_append_remove_keep_order_and_links():
    blocks = [KVCacheBlock(i) for i in range(5)]
    q = FreeBlockQueue(blocks)
    assert [b.block_id for b in q] == [0, 1, 2, 3, 4]
    assert len(q) == 5

    assert q.popleft() is blocks[0]
    q.remove(blocks[2])  # middle
    q.remove(blocks[4])  # last
    assert [b.block_id for b in q] == [1, 3]
    assert blocks[2].prev_free is None and blocks[2].next_free is None
    assert blocks[1].next_free is blocks[3] and blocks[3].prev_free is blocks[1]

    q.append(blocks[2])
    q.append(blocks[0])
    assert [b.block_id for b in q] == [1, 3, 2, 0]
    assert len(q) == 4
    assert q.tail.prev_free is blocks[0] and blocks[0].next_free is q.tail


def test_free_queue_rejects_misuse():
    blocks = [KVCacheBlock(i) for i in range(2)]
    q = FreeBlockQueue(blocks)
    with pytest.raises(RuntimeError, match="already in the free queue"):
        q.append(blocks[0])
    q.remove(blocks[1])
    with pytest.raises(RuntimeError, match="not in the free queue"):
        q.remove(blocks[1])
    q.popleft()
    with pytest.raises(ValueError, match="empty"):
        q.popleft()
    assert len(q) == 0


# ---- allocation and ref counts -------------------------------------------------------------

def test_fresh_pool():
    pool = BlockPool(4)
    assert free_ids(pool) == [0, 1, 2, 3]
    assert pool.num_free_blocks == 4
    assert pool.usage == 0.0
    pool.check_integrity()


def test_get_new_blocks_takes_from_head():
    pool = BlockPool(5)
    blocks = pool.get_new_blocks(3)
    assert [b.block_id for b in blocks] == [0, 1, 2]
    assert [b.ref_cnt for b in blocks] == [1, 1, 1]
    assert free_ids(pool) == [3, 4]
    assert pool.usage == pytest.approx(0.6)
    pool.check_integrity()


def test_get_new_blocks_too_many_raises_without_side_effects():
    pool = BlockPool(3)
    pool.get_new_blocks(1)
    with pytest.raises(ValueError):
        pool.get_new_blocks(3)
    assert free_ids(pool) == [1, 2]
    pool.check_integrity()


def test_free_appends_to_tail_in_given_order():
    pool = BlockPool(5)
    a = pool.get_new_blocks(3)  # 0 1 2
    pool.free_blocks([a[2], a[0], a[1]])
    assert free_ids(pool) == [3, 4, 2, 0, 1]
    assert all(b.ref_cnt == 0 for b in a)
    pool.check_integrity()


def test_touch_and_shared_refs():
    pool = BlockPool(4)
    a = pool.get_new_blocks(2)  # 0 1
    pool.touch([a[0]])  # shared: ref 2, no free-queue change
    assert a[0].ref_cnt == 2
    pool.free_blocks([a[0]])
    assert a[0].ref_cnt == 1 and free_ids(pool) == [2, 3]
    pool.free_blocks(a)
    assert free_ids(pool) == [2, 3, 0, 1]
    # Touching a free block takes it out of the middle of the free queue.
    pool.touch([pool.blocks[3]])
    assert pool.blocks[3].ref_cnt == 1
    assert free_ids(pool) == [2, 0, 1]
    pool.check_integrity()


def test_double_free_raises():
    pool = BlockPool(2)
    (b,) = pool.get_new_blocks(1)
    pool.free_blocks([b])
    with pytest.raises(RuntimeError, match="double free of block 0"):
        pool.free_blocks([b])


# ---- prefix cache --------------------------------------------------------------------------

def test_cached_block_survives_free_and_is_evicted_when_reused():
    pool = BlockPool(3)
    a = pool.get_new_blocks(2)
    pool.cache_full_blocks(a, [111, 222])
    assert pool.get_cached_block(111) is a[0]
    assert pool.get_cached_block(222) is a[1]
    pool.free_blocks(reversed(a))
    assert free_ids(pool) == [2, 1, 0]
    # Still a hit while free.
    assert pool.get_cached_block(111) is a[0] and a[0].block_hash == 111
    pool.check_integrity()

    # LRU: block 2 (never cached) first, then block 1 (freed before 0): its hash goes.
    got = pool.get_new_blocks(2)
    assert [b.block_id for b in got] == [2, 1]
    assert pool.get_cached_block(222) is None and a[1].block_hash is None
    assert pool.get_cached_block(111) is a[0]
    assert free_ids(pool) == [0]
    pool.check_integrity()


def test_least_recently_freed_is_evicted_first():
    pool = BlockPool(3)
    blocks = pool.get_new_blocks(3)
    pool.cache_full_blocks(blocks, [10, 20, 30])
    pool.free_blocks([blocks[1]])
    pool.free_blocks([blocks[2]])
    pool.free_blocks([blocks[0]])
    (b,) = pool.get_new_blocks(1)
    assert b.block_id == 1
    assert pool.get_cached_block(20) is None
    assert pool.get_cached_block(30) is blocks[2] and pool.get_cached_block(10) is blocks[0]


def test_duplicate_hash_keeps_first_block():
    pool = BlockPool(3)
    a, b = pool.get_new_blocks(2)
    pool.cache_full_blocks([a], [5])
    pool.cache_full_blocks([b], [5])
    assert pool.get_cached_block(5) is a
    assert b.block_hash is None
    pool.cache_full_blocks([a], [5])  # re-caching the same block is a no-op
    with pytest.raises(RuntimeError, match="cached as 5"):
        pool.cache_full_blocks([a], [6])
    pool.check_integrity()


def test_caching_disabled_registers_nothing():
    pool = BlockPool(2, enable_caching=False)
    blocks = pool.get_new_blocks(2)
    pool.cache_full_blocks(blocks, [1, 2])
    assert pool.get_cached_block(1) is None
    assert all(b.block_hash is None for b in blocks)
    pool.check_integrity()


def test_reset_prefix_cache():
    pool = BlockPool(3)
    a = pool.get_new_blocks(2)
    pool.cache_full_blocks(a, [1, 2])
    pool.free_blocks([a[1]])
    pool.reset_prefix_cache()
    assert pool.get_cached_block(1) is None and pool.get_cached_block(2) is None
    assert a[0].block_hash is None and a[1].block_hash is None
    assert a[0].ref_cnt == 1 and free_ids(pool) == [2, 1]
    pool.check_integrity()


# ---- check_integrity catches corruption ----------------------------------------------------

def _used_pool() -> tuple[BlockPool, list[KVCacheBlock]]:
    pool = BlockPool(6)
    blocks = pool.get_new_blocks(3)  # 0 1 2 in use; 3 4 5 free
    pool.cache_full_blocks(blocks[:2], [100, 200])
    pool.check_integrity()
    return pool, blocks


def test_integrity_free_block_with_ref():
    pool, _ = _used_pool()
    pool.blocks[4].ref_cnt = 1
    with pytest.raises(AssertionError, match="block 4 is in the free list with ref_cnt 1"):
        pool.check_integrity()


def test_integrity_used_block_with_zero_ref():
    pool, blocks = _used_pool()
    blocks[1].ref_cnt = 0
    with pytest.raises(AssertionError, match="block 1 is not in the free list but has ref_cnt 0"):
        pool.check_integrity()


def test_integrity_broken_back_link():
    pool, _ = _used_pool()
    pool.blocks[4].prev_free = pool.blocks[5]
    with pytest.raises(AssertionError, match="links inconsistent: 3.next is 4 but 4.prev is 5"):
        pool.check_integrity()


def test_integrity_broken_forward_link():
    pool, _ = _used_pool()
    pool.blocks[3].next_free = None
    with pytest.raises(AssertionError, match="link broken after block 3"):
        pool.check_integrity()


def test_integrity_cycle_does_not_hang():
    pool, _ = _used_pool()
    # 3 -> 4 -> 3: the walk must stop at the bad link instead of looping forever.
    pool.blocks[4].next_free = pool.blocks[3]
    with pytest.raises(AssertionError, match="4.next is 3 but 3.prev is -1"):
        pool.check_integrity()


def test_integrity_counter_mismatch():
    pool, _ = _used_pool()
    pool.free_queue.num_free_blocks = 2
    with pytest.raises(AssertionError, match="free-list length 3 != num_free_blocks counter 2"):
        pool.check_integrity()


def test_integrity_used_block_keeps_links():
    pool, blocks = _used_pool()
    blocks[0].next_free = pool.blocks[3]
    with pytest.raises(AssertionError, match="block 0 is out of the free list but still has links"):
        pool.check_integrity()


def test_integrity_hash_map_points_to_wrong_block():
    pool, blocks = _used_pool()
    pool.cached_blocks[100] = blocks[1]
    with pytest.raises(AssertionError, match="key 100 points to block 1 whose block_hash is 200"):
        pool.check_integrity()


def test_integrity_block_hash_not_in_map():
    pool, blocks = _used_pool()
    blocks[2].block_hash = 300
    with pytest.raises(AssertionError, match="block 2 carries hash 300"):
        pool.check_integrity()


def test_integrity_duplicate_block_id():
    pool, _ = _used_pool()
    pool.blocks[5].block_id = 4
    with pytest.raises(AssertionError, match="duplicate block ids \\[4\\]"):
        pool.check_integrity()

import pytest

from tritium.core.kv_cache_manager import KVCacheManager
from tritium.core.kv_cache_utils import hash_block_tokens, update_block_hashes
from tritium.core.request import Request
from tritium.sampling_params import SamplingParams

BS = 4  # block size in every test here


def req(req_id: str, tokens: list[int], **params) -> Request:
    return Request(req_id, tokens, SamplingParams(**params))


def ids(blocks) -> list[int]:
    return [b.block_id for b in blocks]


def free_ids(m: KVCacheManager) -> list[int]:
    return [b.block_id for b in m.block_pool.free_queue]


def schedule(m: KVCacheManager, r: Request, num_new: int):
    """What the scheduler does for one request: prefix match on first sight, allocate, advance."""
    hit, num_hit = ([], 0) if r.num_computed_tokens else m.get_computed_blocks(r)
    new = m.allocate_slots(r, num_new, hit)
    if new is not None:
        r.num_computed_tokens += num_hit + num_new
    return new


# ---- chained hashes ------------------------------------------------------------------------

def test_block_hashes_are_chained_and_incremental():
    r = req("a", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    h = update_block_hashes(r, BS)
    h0 = hash_block_tokens(None, [1, 2, 3, 4])
    h1 = hash_block_tokens(h0, [5, 6, 7, 8])
    assert h == [h0, h1] and r.block_hashes is h  # the partial block is not hashed
    r.append_output_token_ids([10, 11])
    assert update_block_hashes(r, BS) == [h0, h1]
    r.append_output_token_ids(12)
    assert update_block_hashes(r, BS) == [h0, h1, hash_block_tokens(h1, [9, 10, 11, 12])]
    # Same tokens after a different prefix hash differently.
    assert hash_block_tokens(hash_block_tokens(None, [9, 9, 9, 9]), [5, 6, 7, 8]) != h1


# ---- allocation ----------------------------------------------------------------------------

def test_allocate_caches_full_blocks_only():
    m = KVCacheManager(num_blocks=8, block_size=BS)
    a = req("a", list(range(10)))
    assert m.get_computed_blocks(a) == ([], 0)
    new = schedule(m, a, 10)
    assert ids(new) == [0, 1, 2]
    assert m.get_block_ids("a") == [0, 1, 2]
    pool = m.block_pool
    assert pool.get_cached_block(a.block_hashes[0]).block_id == 0
    assert pool.get_cached_block(a.block_hashes[1]).block_id == 1
    assert len(a.block_hashes) == 2 and pool.blocks[2].block_hash is None
    assert free_ids(m) == [3, 4, 5, 6, 7]
    m.check_integrity()


def test_chunked_allocation_caches_only_computed_blocks():
    m = KVCacheManager(num_blocks=8, block_size=BS)
    a = req("a", list(range(10)))
    assert ids(schedule(m, a, 3)) == [0]
    assert m.block_pool.blocks[0].block_hash is None  # 3 of 4 tokens: not full yet
    assert ids(schedule(m, a, 3)) == [1]
    assert m.block_pool.blocks[0].block_hash == a.block_hashes[0]
    assert m.block_pool.blocks[1].block_hash is None
    assert ids(schedule(m, a, 4)) == [2]
    assert m.block_pool.blocks[1].block_hash == a.block_hashes[1]
    m.check_integrity()


def test_decode_allocates_at_block_boundary_and_caches_filled_block():
    m = KVCacheManager(num_blocks=8, block_size=BS)
    a = req("a", [1, 2, 3, 4, 5, 6])
    assert ids(schedule(m, a, 6)) == [0, 1]
    a.append_output_token_ids(7)
    assert schedule(m, a, 1) == []  # position 6 fits in block 1
    a.append_output_token_ids(8)
    assert schedule(m, a, 1) == []  # position 7 completes block 1 ...
    assert m.block_pool.get_cached_block(hash_block_tokens(a.block_hashes[0], [5, 6, 7, 8])).block_id == 1
    a.append_output_token_ids(9)
    assert ids(schedule(m, a, 1)) == [2]  # ... position 8 needs a new one
    assert m.get_block_ids("a") == [0, 1, 2]
    m.check_integrity()


def test_allocate_none_without_side_effects():
    m = KVCacheManager(num_blocks=4, block_size=BS)
    a = req("a", list(range(8)))
    schedule(m, a, 8)  # blocks 0 1
    b = req("b", list(range(100, 113)))  # needs 4 blocks, 2 free
    assert m.allocate_slots(b, 13) is None
    assert m.get_block_ids("b") == [] and "b" not in m.req_to_blocks
    assert free_ids(m) == [2, 3]
    assert [blk.ref_cnt for blk in m.block_pool.blocks] == [1, 1, 0, 0]
    # A running request that cannot grow is untouched as well.
    a.append_output_token_ids(8)
    a.num_computed_tokens = 8
    assert m.allocate_slots(a, 9) is None
    assert m.get_block_ids("a") == [0, 1]
    m.check_integrity()


def test_free_hit_blocks_are_not_counted_as_available():
    m = KVCacheManager(num_blocks=4, block_size=BS)
    a = req("a", list(range(8)))
    schedule(m, a, 8)
    m.free(a)
    assert free_ids(m) == [2, 3, 1, 0]
    # b hits block 0 (free, ref 0) and needs 4 more: only 3 are free once block 0 is taken.
    b = req("b", list(range(4)) + list(range(50, 66)))
    hit, n = m.get_computed_blocks(b)
    assert ids(hit) == [0] and n == 4
    assert m.allocate_slots(b, 16, hit) is None
    assert free_ids(m) == [2, 3, 1, 0] and m.block_pool.blocks[0].ref_cnt == 0
    assert m.block_pool.get_cached_block(b.block_hashes[0]).block_id == 0
    # With 3 new blocks it fits, and the hit block is not evicted by the new allocation.
    b2 = req("b2", list(range(4)) + list(range(50, 62)))
    hit, n = m.get_computed_blocks(b2)
    new = m.allocate_slots(b2, 12, hit)
    assert ids(new) == [2, 3, 1]
    assert m.get_block_ids("b2") == [0, 2, 3, 1]
    assert m.block_pool.blocks[0].ref_cnt == 1 and free_ids(m) == []
    m.check_integrity()


def test_prefix_hit_needs_empty_request():
    m = KVCacheManager(num_blocks=4, block_size=BS)
    a = req("a", list(range(8)))
    schedule(m, a, 8)
    b = req("b", list(range(8)) + [99])
    hit, _ = m.get_computed_blocks(b)
    b.num_computed_tokens = 4
    with pytest.raises(ValueError, match="prefix-hit blocks given"):
        m.allocate_slots(b, 1, hit)


# ---- prefix hits ---------------------------------------------------------------------------

def test_prefix_hit_shares_blocks():
    m = KVCacheManager(num_blocks=8, block_size=BS)
    a = req("a", list(range(10)))
    schedule(m, a, 10)  # 0 1 2, blocks 0 1 cached
    b = req("b", list(range(8)) + [70, 71, 72])
    hit, n = m.get_computed_blocks(b)
    assert ids(hit) == [0, 1] and n == 8
    new = m.allocate_slots(b, 3, hit)
    assert ids(new) == [3]
    assert m.get_block_ids("b") == [0, 1, 3]
    assert [blk.ref_cnt for blk in m.block_pool.blocks[:4]] == [2, 2, 1, 1]
    m.check_integrity()


def test_prefix_hit_never_covers_whole_prompt():
    m = KVCacheManager(num_blocks=8, block_size=BS)
    a = req("a", list(range(12)))
    schedule(m, a, 12)  # 3 full blocks cached
    same = req("same", list(range(8)))  # both blocks cached, but one token must be computed
    hit, n = m.get_computed_blocks(same)
    assert ids(hit) == [0] and n == 4
    longer = req("longer", list(range(9)))
    hit, n = m.get_computed_blocks(longer)
    assert ids(hit) == [0, 1] and n == 8


def test_same_block_after_different_prefix_does_not_hit():
    m = KVCacheManager(num_blocks=8, block_size=BS)
    a = req("a", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    schedule(m, a, 9)
    b = req("b", [9, 9, 9, 9, 5, 6, 7, 8, 9])  # block 1 has a's block-1 tokens
    assert m.get_computed_blocks(b) == ([], 0)
    c = req("c", [1, 2, 3, 4, 0, 6, 7, 8, 9])  # first block hits, second differs
    hit, n = m.get_computed_blocks(c)
    assert ids(hit) == [0] and n == 4


def test_prompt_logprobs_and_disabled_caching_get_no_hit():
    m = KVCacheManager(num_blocks=8, block_size=BS)
    a = req("a", list(range(9)))
    schedule(m, a, 9)
    assert m.get_computed_blocks(req("p", list(range(9)), prompt_logprobs=1)) == ([], 0)
    assert len(m.get_computed_blocks(req("q", list(range(9))))[0]) == 2

    off = KVCacheManager(num_blocks=8, block_size=BS, enable_caching=False)
    a = req("a", list(range(9)))
    schedule(off, a, 9)
    assert off.block_pool.cached_blocks == {}
    assert off.get_computed_blocks(req("q", list(range(9)))) == ([], 0)
    off.check_integrity()


# ---- free and eviction order ---------------------------------------------------------------

def test_free_reverse_order_evicts_sequence_tail_first():
    m = KVCacheManager(num_blocks=5, block_size=BS)
    a = req("a", list(range(12)))
    schedule(m, a, 12)  # 0 1 2
    m.free(a)
    assert m.get_block_ids("a") == []
    assert free_ids(m) == [3, 4, 2, 1, 0]
    assert [blk.ref_cnt for blk in m.block_pool.blocks] == [0] * 5
    # The never-cached blocks go first, then a's tail: block 2, evicting its hash.
    b = req("b", list(range(100, 112)))
    assert ids(schedule(m, b, 12)) == [3, 4, 2]
    h = a.block_hashes
    assert m.block_pool.get_cached_block(h[2]) is None
    assert m.block_pool.get_cached_block(h[0]).block_id == 0
    assert m.block_pool.get_cached_block(h[1]).block_id == 1
    # a's head still hits (limited so that one token remains).
    a2 = req("a2", list(range(12)) + [5])
    hit, n = m.get_computed_blocks(a2)
    assert ids(hit) == [0, 1] and n == 8
    m.check_integrity()


def test_lru_across_requests():
    m = KVCacheManager(num_blocks=4, block_size=BS)
    a, b = req("a", list(range(8))), req("b", list(range(50, 58)))
    schedule(m, a, 8)  # 0 1
    schedule(m, b, 8)  # 2 3
    m.free(b)
    m.free(a)
    assert free_ids(m) == [3, 2, 1, 0]  # b freed first: evicted first
    c = req("c", list(range(90, 97)))
    assert ids(schedule(m, c, 7)) == [3, 2]
    assert m.get_computed_blocks(req("b'", list(range(50, 58)) + [1])) == ([], 0)
    assert len(m.get_computed_blocks(req("a'", list(range(8)) + [1]))[0]) == 2


def test_touch_removes_hit_from_free_queue():
    m = KVCacheManager(num_blocks=4, block_size=BS)
    a = req("a", list(range(8)))
    schedule(m, a, 8)
    m.free(a)
    assert free_ids(m) == [2, 3, 1, 0]
    b = req("b", list(range(8)) + [42])
    assert ids(schedule(m, b, 1)) == [2]
    assert m.get_block_ids("b") == [0, 1, 2]
    assert free_ids(m) == [3]
    assert b.num_computed_tokens == 9
    m.free(b)
    assert free_ids(m) == [3, 2, 1, 0]
    m.check_integrity()


def test_integrity_detects_ref_not_matching_holders():
    m = KVCacheManager(num_blocks=4, block_size=BS)
    a = req("a", list(range(8)))
    schedule(m, a, 8)
    m.check_integrity()
    m.block_pool.blocks[1].ref_cnt = 2
    with pytest.raises(AssertionError, match="block 1 has ref_cnt 2 but 1 request"):
        m.check_integrity()
    m.block_pool.blocks[1].ref_cnt = 1
    m.req_to_blocks["a"].append(m.block_pool.blocks[0])
    with pytest.raises(AssertionError, match="request a holds a block twice"):
        m.check_integrity()

"""Beam search in the scheduler, step by step on the fake runner (which checks every KV slot a
step reads holds its sequence's prefix): beams share their parent's blocks through ref counts,
only a partly filled block is copied, and preemption, chunked prefill and prefix caching on/off
give the same search as a roomy engine."""
from __future__ import annotations

from tritium.config import CacheConfig, ResolvedSchedulerConfig
from tritium.core.request import Request
from tritium.core.scheduler import Scheduler
from tritium.sampling_params import SamplingParams

from tests.unit.fake_runner import FakeRunner

EOS = 0


def make(budget=64, num_blocks=64, block_size=4, caching=True, policy="max_utilization"):
    sched = Scheduler(ResolvedSchedulerConfig(max_num_seqs=8, max_num_batched_tokens=budget, max_model_len=64,
                                              max_beam_width=4, capacity_policy=policy),
                      CacheConfig(block_size=block_size, num_blocks=num_blocks, enable_prefix_caching=caching))
    return sched, FakeRunner(block_size)


def beam_req(req_id, prompt, width=3, max_tokens=6, **params) -> Request:
    return Request(req_id, prompt, SamplingParams(max_tokens=max_tokens, use_beam_search=True, n=width, **params),
                   eos_token_ids=(EOS,))


def run(sched, runner, requests, max_steps=400):
    for r in requests:
        sched.add_request(r)
    results, steps = {}, 0
    while sched.has_unfinished_requests():
        so = sched.schedule()
        for out in sched.update_from_output(so, runner.execute(so)):
            if out.finished:
                results[out.req_id] = ([(h.token_ids, round(h.score, 9)) for h in out.beam_hypotheses]
                                       if out.beam_hypotheses is not None else out.new_token_ids)
        sched.kv_cache_manager.check_integrity()
        steps += 1
        assert steps < max_steps, "the scheduler made no progress"
    assert sched.kv_cache_manager.usage == 0.0
    return results


def test_beams_share_the_prompt_and_copy_only_a_partly_filled_block():
    sched, runner = make(block_size=4)
    kv = sched.kv_cache_manager
    sched.add_request(beam_req("b", list(range(1, 11)), width=3))  # 10 prompt tokens: blocks 2 full + 1 partial
    so = sched.schedule()
    assert so.num_scheduled_tokens == {"b": 10} and not so.blocks_to_copy
    sched.update_from_output(so, runner.execute(so))
    beams = sched.requests["b"].beam.beams
    assert [b.request_id for b in beams] == ["b", "b#beam1", "b#beam2"]
    prompt_blocks = list(kv.req_to_blocks["b"])
    for beam in beams:  # every beam holds the prompt's three blocks, nothing copied
        assert kv.req_to_blocks[beam.request_id] == prompt_blocks
        assert beam.num_computed_tokens == 10 and beam.num_tokens == 11
    assert [b.ref_cnt for b in prompt_blocks] == [3, 3, 3]

    so = sched.schedule()  # each beam writes position 10 into the shared partial block: two copies
    assert sorted(so.num_scheduled_tokens.values()) == [1, 1, 1]
    assert [src for src, _ in so.blocks_to_copy] == [prompt_blocks[2].block_id] * 2
    assert [b.ref_cnt for b in prompt_blocks] == [3, 3, 1]  # the full blocks stay shared
    last_blocks = {kv.req_to_blocks[b.request_id][2].block_id for b in beams}
    assert len(last_blocks) == 3  # each beam has its own partial block now
    sched.update_from_output(so, runner.execute(so))
    sched.kv_cache_manager.check_integrity()


def test_only_partial_blocks_are_ever_copied():
    sched, runner = make(block_size=4)
    full_blocks_seen = set()
    sched.add_request(beam_req("b", list(range(1, 14)), width=4, max_tokens=12))
    while sched.has_unfinished_requests():
        so = sched.schedule()
        for src, _ in so.blocks_to_copy:
            assert src not in full_blocks_seen, "a full block was copied"
        for blocks in sched.kv_cache_manager.req_to_blocks.values():
            full_blocks_seen.update(b.block_id for b in blocks if b.block_hash is not None)
        sched.update_from_output(so, runner.execute(so))
        sched.kv_cache_manager.check_integrity()
    assert 0 < runner.num_blocks_copied <= 3 * 12  # at most width - 1 copies a step


def workload():
    return [beam_req("b1", list(range(1, 11)), width=3, max_tokens=7),
            Request("g1", list(range(20, 33)), SamplingParams(max_tokens=6), eos_token_ids=(EOS,)),
            beam_req("b2", list(range(40, 46)), width=4, max_tokens=9, length_penalty=1.0, early_stopping=False),
            beam_req("b3", list(range(1, 11)) + [7, 7], width=2, max_tokens=5, early_stopping="never",
                     length_penalty=0.5),
            Request("g2", list(range(50, 55)), SamplingParams(max_tokens=9), eos_token_ids=(EOS,))]


def test_same_search_under_preemption_chunking_and_without_prefix_caching():
    want = run(*make(), workload())
    assert {k: len(v) for k, v in want.items() if k.startswith("b")} == {"b1": 3, "b2": 4, "b3": 2}
    for kwargs in [dict(num_blocks=14), dict(budget=5), dict(caching=False, num_blocks=14), dict(budget=4),
                   dict(num_blocks=16, policy="guaranteed_no_evict")]:
        sched, runner = make(**kwargs)
        assert run(sched, runner, workload()) == want, kwargs
        if kwargs.get("num_blocks"):  # too small for all at once: preempted, unless that is ruled out
            assert (sched.num_preemptions_total > 0) == ("policy" not in kwargs)


def test_abort_frees_every_beam():
    sched, runner = make()
    sched.add_request(beam_req("b", list(range(1, 11)), width=3, max_tokens=20))
    for _ in range(3):
        so = sched.schedule()
        sched.update_from_output(so, runner.execute(so))
    ids = {b.request_id for b in sched.requests["b"].beam.beams}
    assert len(ids) == 3
    assert [r.request_id for r in sched.abort_requests(["b"])] == ["b"]
    assert sched.kv_cache_manager.usage == 0.0 and not sched.requests
    assert ids <= sched.schedule().finished_req_ids  # the runner drops every beam

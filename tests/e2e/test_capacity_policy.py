"""The capacity scheduler policy, written as TensorRT-LLM's users write it
(`LLM(model, scheduler_config=SchedulerConfig(capacity_scheduler_policy=...))`), reaches the
engine's scheduler; under memory pressure (a KV cache that holds about two of the requests at
full length) MAX_UTILIZATION preempts and GUARANTEED_NO_EVICT never does, and both give Hugging
Face's greedy tokens."""
from __future__ import annotations

import pytest

from tests.e2e.test_inflight_batching import hf_greedy, make_prompts
from tritium import (BuildConfig, CapacitySchedulerPolicy, ContextChunkingPolicy, KvCacheConfig, SamplingParams,
                     SchedulerConfig)
from tritium.llm.llm import LLM

GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
BLOCK = 4


@pytest.fixture(scope="module")
def reference(tiny_llama, hf_tiny_llama):
    prompts = make_prompts(hf_tiny_llama.config.vocab_size, count=8, seed=31, shared_prefix=0)
    return prompts, [hf_greedy(hf_tiny_llama, p, GREEDY.max_tokens) for p in prompts]


def blocks_at_full_length(prompt: list[int]) -> int:
    return -(-(len(prompt) + GREEDY.max_tokens) // BLOCK)


@pytest.mark.parametrize("scheduler_config,policy", [
    (None, CapacitySchedulerPolicy.MAX_UTILIZATION),  # tritium's default
    (SchedulerConfig(capacity_scheduler_policy=CapacitySchedulerPolicy.MAX_UTILIZATION),
     CapacitySchedulerPolicy.MAX_UTILIZATION),
    (SchedulerConfig(capacity_scheduler_policy=CapacitySchedulerPolicy.GUARANTEED_NO_EVICT,
                     context_chunking_policy=ContextChunkingPolicy.FIRST_COME_FIRST_SERVED),
     CapacitySchedulerPolicy.GUARANTEED_NO_EVICT),
])
def test_only_max_utilization_preempts_and_both_equal_hugging_face(tiny_llama, reference, scheduler_config, policy):
    prompts, expected = reference
    longest = max(blocks_at_full_length(p) for p in prompts)
    build = BuildConfig(max_batch_size=8, max_num_tokens=512, max_seq_len=longest * BLOCK)
    kv = KvCacheConfig(tokens_per_block=BLOCK, enable_block_reuse=False, max_tokens=2 * longest * BLOCK)
    with LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=kv,
             scheduler_config=scheduler_config) as llm:
        scheduler = llm._engine.core.scheduler
        assert scheduler.config.capacity_scheduler_policy is policy  # what the engine's scheduler was built with
        assert scheduler.no_evict == (policy is CapacitySchedulerPolicy.GUARANTEED_NO_EVICT)
        outs = llm.generate(prompts, GREEDY)
        totals, stats = llm.get_stats_totals(), llm.get_stats()
        scheduler.kv_cache_manager.check_integrity()
    assert [o.outputs[0].token_ids for o in outs] == expected
    if policy is CapacitySchedulerPolicy.MAX_UTILIZATION:
        assert totals.num_preemptions > 0
        return
    assert totals.num_preemptions == 0 and all(s.num_preemptions == 0 for s in stats)
    # The requests did not all fit at full length at once; it still batched several when they fitted.
    assert sum(blocks_at_full_length(p) for p in prompts) > 2 * longest
    assert max(s.num_running for s in stats) > 1

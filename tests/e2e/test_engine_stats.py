"""Per-step engine statistics (LLM.get_stats) and per-token perf metrics on outputs, checked
against what the requests must cost: every prompt position computed once, every output token
sampled once, each preemption counted, token times inside the caller's own clock readings."""
from __future__ import annotations

import time

import pytest

from tritium import BuildConfig, KvCacheConfig, SamplingParams
from tritium.llm.llm import LLM


def _prompts(lengths: list[int]) -> list[list[int]]:
    return [[(7 * i + 13 * j) % 250 + 3 for j in range(n)] for i, n in enumerate(lengths)]


@pytest.mark.parametrize("overlap", [False, True], ids=["sync", "overlapped"])
def test_stats_count_every_prompt_and_output_token_with_chunked_prefill(tiny_llama, overlap):
    prompt_lens, max_tokens = [40, 9, 33], [5, 12, 1]
    build = BuildConfig(max_batch_size=4, max_num_tokens=16, max_seq_len=64)  # prompts span several chunks
    with LLM(tiny_llama, build_config=build, kv_cache_config=KvCacheConfig(enable_block_reuse=False)) as llm:
        llm._engine.core.runner.supports_overlap = overlap  # the GPU's pipelined steps, on the CPU (test_overlap.py)
        start = time.perf_counter()
        llm.generate(_prompts(prompt_lens), [SamplingParams(max_tokens=m, ignore_eos=True) for m in max_tokens],
                     use_tqdm=False)
        wall = time.perf_counter() - start
        assert (llm._engine.core.runner.num_placeholder_tokens > 0) == overlap
        stats = llm.get_stats()
        totals = llm.get_stats_totals()
        assert llm.get_stats() == []  # drained
    assert [s.iteration for s in stats] == list(range(len(stats)))
    assert all(s.num_scheduled_tokens <= 16 and s.num_prompt_tokens <= s.num_scheduled_tokens for s in stats)
    assert sum(s.num_prompt_tokens for s in stats) == sum(prompt_lens) == totals.num_prompt_tokens
    assert sum(s.num_generation_tokens for s in stats) == sum(max_tokens) == totals.num_generation_tokens
    # Each request computes its prompt and all but its last output token.
    assert sum(s.num_scheduled_tokens for s in stats) == sum(prompt_lens) + sum(max_tokens) - len(max_tokens)
    assert max(s.num_in_flight for s in stats) == 3 and max(s.num_scheduled_requests for s in stats) <= 3
    assert all(0 < s.kv_cache_usage <= 1 and s.step_time_s > 0 for s in stats)
    assert totals.num_steps == len(stats) and totals.num_preemptions == 0
    assert sum(s.step_time_s for s in stats) == pytest.approx(totals.busy_time_s) and totals.busy_time_s < wall


def test_stats_count_preemptions(tiny_llama):
    build = BuildConfig(max_batch_size=4, max_seq_len=64)
    kv = KvCacheConfig(max_tokens=64, enable_block_reuse=False)  # 4 blocks of 16: four requests of 40 cannot all fit
    with LLM(tiny_llama, build_config=build, kv_cache_config=kv) as llm:
        outs = llm.generate(_prompts([20] * 4), SamplingParams(max_tokens=20, ignore_eos=True), use_tqdm=False)
        stats = llm.get_stats()
        scheduler = llm._engine.core.scheduler
        assert scheduler.num_preemptions_total > 0
        assert sum(s.num_preemptions for s in stats) == scheduler.num_preemptions_total
    assert all(len(o.outputs[0].token_ids) == 20 for o in outs)
    assert max(s.kv_cache_usage for s in stats) == 1.0
    assert sum(s.num_generation_tokens for s in stats) == 80
    # Recompute preemption computes a preempted request's prompt again.
    assert sum(s.num_prompt_tokens for s in stats) > 80
    assert all(s.num_prompt_tokens <= s.num_scheduled_tokens for s in stats)


def test_perf_metrics_stamp_each_token_when_its_step_ends(tiny_llama):
    with LLM(tiny_llama, build_config=BuildConfig(max_batch_size=4, max_seq_len=64)) as llm:
        before = time.perf_counter()
        outs = llm.generate(_prompts([6, 6]), [SamplingParams(max_tokens=n, ignore_eos=True, return_perf_metrics=True)
                                               for n in (4, 9)], use_tqdm=False)
        after = time.perf_counter()
        plain = llm.generate(_prompts([5]), SamplingParams(max_tokens=3), use_tqdm=False)
    short, long = (o.outputs[0].request_perf_metrics for o in outs)
    for m, out in zip((short, long), outs):
        assert len(m.token_times) == len(out.outputs[0].token_ids)
        assert before <= m.arrival_time <= m.first_token_time <= m.last_token_time <= after
        assert m.token_times == sorted(m.token_times)
    # Both requests ran in the same steps: one stamp per step, shared while both decode.
    assert short.token_times == long.token_times[:4] and len(set(long.token_times)) == 9
    assert plain[0].outputs[0].request_perf_metrics is None

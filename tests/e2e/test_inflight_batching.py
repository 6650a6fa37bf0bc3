"""In-flight batching: prompts generated together equal each generated alone, and equal
Hugging Face greedy generation — also under preemption, prefix caching on/off, and chunked
prefill at a tiny token budget."""
from __future__ import annotations

import random
import threading

import pytest
import torch

from tritium import BuildConfig, KvCacheConfig, SamplingParams
from tritium.llm.llm import LLM

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


def make_prompts(vocab_size: int, count: int = 10, seed: int = 0, shared_prefix: int = 20) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(vocab_size) for _ in range(shared_prefix)]
    prompts = []
    for i in range(count):
        body = [rng.randrange(vocab_size) for _ in range(rng.randint(1, 40))]
        # Half share a prefix so block reuse has something to reuse.
        prompts.append(prefix + body if i % 2 else body)
    return prompts


def hf_greedy(hf_model, prompt: list[int], max_tokens: int) -> list[int]:
    """Greedy tokens from full Hugging Face forward passes (EOS is just another token here,
    as with ignore_eos; HF generate's min_new_tokens would instead forbid it)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(max_tokens):
            next_id = hf_model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, len(prompt):].tolist()


def engine_case(case: str, prompts: list[list[int]], prefix_caching: bool = True,
                tokens_per_block: int = 4) -> tuple[BuildConfig, KvCacheConfig]:
    """Engine limits that exercise one scheduling regime for these prompts (GREEDY outputs):
    roomy; preempting (KV room for about two of the longest requests); tiny_budget (7 tokens a
    step); unchunked (whole prompts only, so few fit in one step's budget)."""
    longest = max(len(p) for p in prompts) + GREEDY.max_tokens
    build = BuildConfig(max_batch_size=8, max_num_tokens=512, max_seq_len=longest + 16)
    kv = KvCacheConfig(enable_block_reuse=prefix_caching, tokens_per_block=tokens_per_block)
    if case == "preempting":
        kv = KvCacheConfig(enable_block_reuse=prefix_caching, tokens_per_block=tokens_per_block,
                           max_tokens=2 * longest + 2 * tokens_per_block)
    elif case == "tiny_budget":
        build = BuildConfig(max_batch_size=8, max_num_tokens=7, max_seq_len=longest + 16)
    elif case == "unchunked":
        build = BuildConfig(max_batch_size=8, max_num_tokens=longest + 16, max_seq_len=longest + 16,
                            enable_chunked_prefill=False)
    return build, kv


@pytest.fixture(scope="module")
def reference(tiny_llama, hf_tiny_llama):
    vocab = hf_tiny_llama.config.vocab_size
    prompts = make_prompts(vocab)
    expected = [hf_greedy(hf_tiny_llama, p, GREEDY.max_tokens) for p in prompts]
    return prompts, expected


def test_alone_equals_hugging_face(tiny_llama, reference):
    prompts, expected = reference
    with LLM(tiny_llama, dtype="float32", build_config=BuildConfig(max_batch_size=1)) as llm:
        for prompt, want in zip(prompts[:4], expected[:4]):
            out = llm.generate(prompt, GREEDY)
            assert out.outputs[0].token_ids == want
            assert out.outputs[0].finish_reason == "length"


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("case", ["roomy", "preempting", "tiny_budget", "unchunked"])
def test_inflight_equals_alone(tiny_llama, reference, prefix_caching, case):
    prompts, expected = reference
    build, kv = engine_case(case, prompts, prefix_caching=prefix_caching)
    with LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=kv) as llm:
        outs = llm.generate(prompts, GREEDY)
        scheduler = llm._engine.core.scheduler
        assert [o.outputs[0].token_ids for o in outs] == expected
        assert [o.prompt_token_ids for o in outs] == prompts
        if case == "preempting":
            assert scheduler.num_preemptions_total > 0, "the tiny KV cache should have forced preemption"
        scheduler.kv_cache_manager.block_pool.check_integrity()


def test_prefix_cache_hit_is_reported_and_correct(tiny_llama, reference):
    prompts, expected = reference
    kv = KvCacheConfig(enable_block_reuse=True, tokens_per_block=4)
    with LLM(tiny_llama, dtype="float32", kv_cache_config=kv, build_config=BuildConfig(max_seq_len=256)) as llm:
        first = llm.generate(prompts[1], GREEDY)
        again = llm.generate(prompts[1], GREEDY)
    assert first.num_cached_tokens == 0
    # Every full block of the prompt but the last token's is served from the cache.
    assert again.num_cached_tokens == ((len(prompts[1]) - 1) // 4) * 4
    assert first.outputs[0].token_ids == again.outputs[0].token_ids == expected[1]


def test_qwen3_batch_matches_hugging_face(tiny_qwen3):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_qwen3, torch_dtype=torch.float32).eval()
    prompts = make_prompts(hf.config.vocab_size, count=6, seed=3)
    expected = [hf_greedy(hf, p, GREEDY.max_tokens) for p in prompts]
    with LLM(tiny_qwen3, dtype="float32", build_config=BuildConfig(max_num_tokens=16, max_seq_len=256)) as llm:
        outs = llm.generate(prompts, GREEDY)
    assert [o.outputs[0].token_ids for o in outs] == expected


def test_a_failing_step_fails_only_its_requests(tiny_llama, reference):
    prompts, expected = reference
    with LLM(tiny_llama, dtype="float32", build_config=BuildConfig(max_seq_len=256)) as llm:
        runner = llm._engine.core.runner
        real_execute = runner.execute_model
        calls = {"n": 0}

        def fail_once(sched_out):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected device fault")
            return real_execute(sched_out)

        runner.execute_model = fail_once
        with pytest.raises(RuntimeError, match="injected device fault"):
            llm.generate(prompts[:3], GREEDY)
        # The engine survives: its blocks were returned and new requests are served correctly.
        outs = llm.generate(prompts[:3], GREEDY)
        assert [o.outputs[0].token_ids for o in outs] == expected[:3]
        manager = llm._engine.core.scheduler.kv_cache_manager
        manager.check_integrity()
        assert manager.num_free_blocks == manager.block_pool.num_blocks  # every block is back in the pool


def test_prompt_logprobs_under_preemption_equal_roomy(tiny_llama, reference):
    prompts, _ = reference
    longest = max(len(p) for p in prompts) + GREEDY.max_tokens
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, prompt_logprobs=1)
    build = BuildConfig(max_batch_size=8, max_num_tokens=512, max_seq_len=longest + 16)
    results = {}
    for case, max_tokens in (("roomy", None), ("preempting", 2 * longest + 8)):
        kv = KvCacheConfig(tokens_per_block=4, max_tokens=max_tokens)
        with LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=kv) as llm:
            results[case] = llm.generate(prompts, params)
            if case == "preempting":
                assert llm._engine.core.scheduler.num_preemptions_total > 0
    for roomy, preempted, prompt in zip(results["roomy"], results["preempting"], prompts):
        assert len(preempted.prompt_logprobs) == len(prompt)
        assert preempted.outputs[0].token_ids == roomy.outputs[0].token_ids
        for got, want in zip(preempted.prompt_logprobs[1:], roomy.prompt_logprobs[1:]):
            assert got.keys() == want.keys()
            assert [g.logprob for g in got.values()] == pytest.approx([w.logprob for w in want.values()], abs=1e-4)


def test_shutdown_fails_requests_still_in_flight(tiny_llama, reference):
    prompts, _ = reference
    llm = LLM(tiny_llama, dtype="float32", build_config=BuildConfig(max_seq_len=256))
    release = threading.Event()
    real_execute = llm._engine.core.runner.execute_model

    def slow(sched_out):  # hold the engine in a step until shutdown has been asked for
        release.wait(10)
        return real_execute(sched_out)

    llm._engine.core.runner.execute_model = slow
    stream = llm.generate_async(prompts[0], SamplingParams(max_tokens=200, ignore_eos=True))
    threading.Timer(0.2, release.set).start()
    llm.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        stream.result(timeout=10)  # ends with an error instead of hanging
    with pytest.raises(RuntimeError, match="shut down"):
        llm.generate(prompts[0], GREEDY)


def test_the_start_up_heap_is_frozen_while_serving_and_freed_after_shutdown(tiny_llama, reference):
    """The engine keeps its start-up objects out of the garbage collector's scans and collects
    young objects less often while it runs, and undoes both at shutdown: the model is collected
    (a frozen reference cycle never is) and the caller's thresholds are back."""
    import gc
    import weakref

    from tritium.engine.background import GC_YOUNG_THRESHOLD

    prompts, expected = reference
    before = gc.get_threshold()
    llm = LLM(tiny_llama, dtype="float32", build_config=BuildConfig(max_seq_len=256))
    model = weakref.ref(llm._engine.core.runner.model)
    assert gc.get_freeze_count() > 0 and gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    assert [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)] == expected
    llm.shutdown()
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    del llm
    gc.collect()
    assert model() is None


def test_a_failing_command_fails_its_requests_and_the_loop_survives(tiny_llama, reference):
    prompts, expected = reference
    with LLM(tiny_llama, dtype="float32", build_config=BuildConfig(max_seq_len=256)) as llm:
        scheduler = llm._engine.core.scheduler
        real_add = scheduler.add_request

        def refuse(request):
            raise RuntimeError("injected add fault")

        scheduler.add_request = refuse
        with pytest.raises(RuntimeError, match="injected add fault"):
            llm.generate(prompts[:2], GREEDY)
        scheduler.add_request = real_add
        outs = llm.generate(prompts[:2], GREEDY)
        assert [o.outputs[0].token_ids for o in outs] == expected[:2]

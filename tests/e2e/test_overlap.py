"""Overlapped scheduling (step N + 1 scheduled and launched before step N's tokens reach the
host, its unknown input tokens fed in on the device) gives exactly what the synchronous engine
gives. On a GPU the runner overlaps by itself; here the CPU runner is told to, which runs the
same code paths (placeholders, one-step-late outputs, length caps, preemption, aborts)."""
from __future__ import annotations

import pytest

from tests.e2e.test_inflight_batching import GREEDY, engine_case, hf_greedy, make_prompts
from tritium import BuildConfig, SamplingParams
from tritium.llm.llm import LLM


def overlapped(llm: LLM) -> LLM:
    llm._engine.core.runner.supports_overlap = True
    return llm


@pytest.fixture(scope="module")
def expected(tiny_llama, hf_tiny_llama):
    prompts = make_prompts(hf_tiny_llama.config.vocab_size, count=8, seed=3)
    return prompts, [hf_greedy(hf_tiny_llama, p, GREEDY.max_tokens) for p in prompts]


@pytest.mark.parametrize("case", ["roomy", "preempting", "tiny_budget"])
def test_overlapped_equals_hugging_face(tiny_llama, expected, case):
    prompts, want = expected
    build, kv = engine_case(case, prompts)
    with overlapped(LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=kv)) as llm:
        outs = llm.generate(prompts, GREEDY)
        core = llm._engine.core
        assert [o.outputs[0].token_ids for o in outs] == want
        assert all(o.outputs[0].finish_reason == "length" for o in outs)
        assert core.runner.num_placeholder_tokens > 0, "no step was launched before its inputs were known"
        if case == "preempting":
            assert core.scheduler.num_preemptions_total > 0
        assert core.scheduler.kv_cache_manager.usage == 0.0  # every block returned
        core.scheduler.kv_cache_manager.check_integrity()


def test_overlap_keeps_stops_seeds_penalties_and_logprobs(tiny_llama, expected):
    prompts, _ = expected
    params = [
        SamplingParams(max_tokens=10, temperature=0.0),  # stops at EOS if it comes: the extra step is dropped
        SamplingParams(max_tokens=9, temperature=0.9, seed=7, ignore_eos=True),
        SamplingParams(max_tokens=8, temperature=0.0, repetition_penalty=1.3, ignore_eos=True),  # runs synchronously
        SamplingParams(max_tokens=6, temperature=0.0, logprobs=2, ignore_eos=True),
        SamplingParams(max_tokens=7, temperature=0.0, stop_token_ids=[prompts[0][0]], min_tokens=2),
    ]
    build = BuildConfig(max_batch_size=8, max_seq_len=128)
    with LLM(tiny_llama, dtype="float32", build_config=build) as llm:
        sync = llm.generate(prompts[:5], params)
    with overlapped(LLM(tiny_llama, dtype="float32", build_config=build)) as llm:
        over = llm.generate(prompts[:5], params)
    for a, b, p in zip(sync, over, params):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert a.outputs[0].finish_reason == b.outputs[0].finish_reason
        assert len(b.outputs[0].token_ids) <= p.max_tokens  # no token of the one-step-late extra step leaks
    assert len(over[3].outputs[0].logprobs) == 6
    assert over[3].outputs[0].logprobs == sync[3].outputs[0].logprobs


def test_abort_while_a_step_is_in_flight_frees_everything(tiny_llama, expected):
    prompts, _ = expected
    with overlapped(LLM(tiny_llama, dtype="float32", build_config=BuildConfig(max_batch_size=8, max_seq_len=256))) as llm:
        stream = llm.generate_async(prompts[0], SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True),
                                    streaming=True)
        import asyncio

        async def take_three():
            got = 0
            async for _ in stream:
                got += 1
                if got == 3:
                    stream.abort()
            return got

        asyncio.run(take_three())
        out = llm.generate(prompts[1], GREEDY)  # the engine keeps serving
        assert len(out.outputs[0].token_ids) == GREEDY.max_tokens
        scheduler = llm._engine.core.scheduler
        assert scheduler.kv_cache_manager.usage == 0.0
        scheduler.kv_cache_manager.check_integrity()


def test_late_scheduling_waits_for_arrivals_and_keeps_the_tokens(tiny_llama, expected):
    """Late scheduling (engine/pacing.py) on the overlapped CPU engine, with a pretend 40 ms GPU
    step: the loop waits before decode steps, a request added meanwhile ends the wait, and
    the tokens stay Hugging Face's."""
    import time

    from tritium.engine.pacing import StepPacer

    prompts, want = expected
    with overlapped(LLM(tiny_llama, dtype="float32")) as llm:
        core = llm._engine.core
        pacer = StepPacer()
        pacer.finished_decode = lambda gpu_s: pacer._gpu_s.append(0.04)  # the CPU runner has no GPU timing
        waits = []
        delay = pacer.delay
        pacer.delay = lambda: waits.append(delay()) or waits[-1]
        core.pacer = pacer
        after_add = []
        add = core.add_request
        core.add_request = lambda request: (add(request), after_add.append(core.pacing_delay()))
        first = llm.generate_async(prompts[0], SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
        time.sleep(0.3)  # decoding, paced
        late = llm.generate(prompts[1:], GREEDY, use_tqdm=False)  # arrive while the loop waits
        assert first.result().outputs[0].token_ids[:GREEDY.max_tokens] == want[0]
    assert [o.outputs[0].token_ids for o in late] == want[1:]
    assert any(w > 0.01 for w in waits), "the loop never waited for arrivals"
    assert after_add and all(d == 0.0 for d in after_add)  # an arrival is scheduled without waiting


def test_late_scheduling_leaves_large_decode_batches_alone(tiny_llama, expected, monkeypatch):
    """Decode steps of more requests than pacing.MAX_PACED_BATCH are scheduled at once (pacing them
    cost 2% of offline throughput at 512 requests on an H200); the tokens stay Hugging Face's."""
    from tritium.engine import engine_core
    from tritium.engine.pacing import StepPacer

    monkeypatch.setattr(engine_core, "MAX_PACED_BATCH", 0)  # every step is larger (64 here: waits)
    prompts, want = expected
    with overlapped(LLM(tiny_llama, dtype="float32")) as llm:
        pacer = StepPacer()
        pacer.finished_decode = lambda gpu_s: pacer._gpu_s.append(0.04)  # a pretend 40 ms GPU step
        waits = []
        delay = pacer.delay
        pacer.delay = lambda: waits.append(delay()) or waits[-1]
        llm._engine.core.pacer = pacer
        out = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in out] == want
    assert waits and all(w == 0.0 for w in waits)


def test_an_idle_overlapped_engine_waits_instead_of_stepping(tiny_llama):
    """Once its requests are done, an overlapped engine's loop blocks for commands: it does not
    spin through empty steps (it did, ~93,000 a second, holding a core and the GIL)."""
    import time

    with overlapped(LLM(tiny_llama, dtype="float32", max_batch_size=4)) as llm:
        core = llm._engine.core
        steps = []
        step = core.step
        core.step = lambda: steps.append(1) or step()
        out = llm.generate([[1, 2, 3, 4]], SamplingParams(max_tokens=3, ignore_eos=True), use_tqdm=False)
        assert len(out[0].outputs[0].token_ids) == 3
        time.sleep(0.2)  # the loop finishes what is in flight, then waits
        done = len(steps)
        time.sleep(0.3)
        assert len(steps) == done and not core.has_unfinished_requests()
        again = llm.generate([[5, 6, 7]], SamplingParams(max_tokens=2, ignore_eos=True), use_tqdm=False)
        assert len(again[0].outputs[0].token_ids) == 2  # and wakes for the next request

"""TensorRT-LLM's logits-level SamplingParams against Hugging Face transformers' own logits
processors on the same weights (NoRepeatNGram, NoBadWords), HF logits for embedding_bias, context
and generation logits, and the documented behaviour of logits processors, top_p decay and end_id;
each also through the overlapped engine path (their requests must then run synchronously)."""
from __future__ import annotations

import pytest
import torch
from transformers import NoBadWordsLogitsProcessor, NoRepeatNGramLogitsProcessor

from tests.e2e.test_inflight_batching import make_prompts
from tritium import BuildConfig, KvCacheConfig, LogitsProcessor, SamplingParams
from tritium.llm.llm import LLM

MAX_TOKENS = 10


def greedy(**kwargs) -> SamplingParams:
    return SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True, **kwargs)


def hf_greedy_processed(hf_model, prompt: list[int], processor=None, bias=None, steps: int = MAX_TOKENS) -> list[int]:
    """Greedy decoding from full HF forward passes, with an HF logits processor on the scores."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(steps):
            scores = hf_model(ids).logits[:, -1].float()
            if bias is not None:
                scores = scores + bias
            if processor is not None:
                scores = processor(ids, scores)
            ids = torch.cat([ids, scores.argmax(-1).view(1, 1)], dim=1)
    return ids[0, len(prompt):].tolist()


@pytest.fixture(scope="module", params=["sync", "overlapped"])
def llm(request, tiny_llama):
    build = BuildConfig(max_batch_size=8, max_seq_len=160)
    kv = KvCacheConfig(tokens_per_block=4)
    with LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=kv) as engine:
        engine._engine.core.runner.supports_overlap = request.param == "overlapped"
        yield engine


@pytest.fixture(scope="module")
def prompts(hf_tiny_llama):
    return make_prompts(hf_tiny_llama.config.vocab_size, count=4, seed=11)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_size_equals_hugging_face(llm, hf_tiny_llama, prompts, n):
    outs = llm.generate(prompts, greedy(no_repeat_ngram_size=n))
    for prompt, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy_processed(hf_tiny_llama, prompt, NoRepeatNGramLogitsProcessor(n))


def test_bad_token_ids_and_bad_sequences_equal_hugging_face(llm, hf_tiny_llama, prompts):
    plain = llm.generate(prompts, greedy())
    for prompt, out in zip(prompts, plain):
        tokens = out.outputs[0].token_ids
        # Ban the first token greedy picks, and the pair greedy makes at positions 3-4 (the second
        # token is banned only right after the first).
        bad = [[tokens[0]], [tokens[3], tokens[4]]]
        got = llm.generate(prompt, greedy(bad_token_ids=[tokens[0]]))
        hf_bad = NoBadWordsLogitsProcessor(bad[:1], eos_token_id=None)
        assert got.outputs[0].token_ids == hf_greedy_processed(hf_tiny_llama, prompt, hf_bad)
        params = greedy(bad_token_ids=[tokens[0]])
        params._bad_word_ids = [bad[1]]  # what `bad` strings become once tokenized (no tokenizer here)
        got = llm.generate(prompt, params)
        want = hf_greedy_processed(hf_tiny_llama, prompt, NoBadWordsLogitsProcessor(bad, eos_token_id=None))
        assert got.outputs[0].token_ids == want


def test_embedding_bias_is_added_to_the_logits(llm, hf_tiny_llama, prompts):
    vocab = hf_tiny_llama.config.vocab_size
    bias = torch.linspace(-3.0, 3.0, vocab)  # shifts greedy towards high ids without fixing the choice
    outs = llm.generate(prompts, greedy(embedding_bias=bias))
    for prompt, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy_processed(hf_tiny_llama, prompt, bias=bias)
    with pytest.raises(ValueError, match="embedding_bias"):
        llm.generate(prompts[0], greedy(embedding_bias=torch.zeros(vocab + 1)))


class AllowOnly(LogitsProcessor):
    """TensorRT-LLM's llm_logits_processor.py example: every step may only pick one token."""

    def __init__(self, token_id: int):
        self.token_id = token_id
        self.calls = []

    def __call__(self, req_id, logits, token_ids, stream_ptr, client_id):
        self.calls.append((req_id, tuple(logits.shape), [list(t) for t in token_ids], client_id))
        mask = torch.full_like(logits, float("-inf"))
        mask[:, :, self.token_id] = 0
        logits += mask


def test_logits_processor_per_request_and_batched(tiny_llama, prompts):
    calls = []

    def batched(req_ids, logits, token_ids, stream_ptr, client_ids):
        calls.append((list(req_ids), [tuple(x.shape) for x in logits], len(token_ids)))
        for x in logits:
            x[:, :, :] = float("-inf")
            x[:, :, 7] = 0

    with LLM(tiny_llama, dtype="float32", max_batch_size=8, max_seq_len=160, batched_logits_processor=batched) as llm:
        allow = AllowOnly(42)
        sampled = SamplingParams(max_tokens=5, temperature=0.9, top_p=0.95, seed=1, logits_processor=allow)
        out = llm.generate(prompts[0], sampled)
        assert out.outputs[0].token_ids == [42] * 5
        assert [c[0] for c in allow.calls] == [int(out.request_id)] * 5  # the LLM's request id, as an int
        assert all(c[1] == (1, 1, 256) for c in allow.calls)  # [tokens, beams, vocab]
        # Each call sees the tokens so far: the prompt, then one more generated token each step.
        assert [c[2] for c in allow.calls] == [[prompts[0] + [42] * i] for i in range(5)]

        outs = llm.generate(prompts[:3], [
            SamplingParams(max_tokens=4, temperature=0.8, apply_batched_logits_processor=True),
            SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True),
            SamplingParams(max_tokens=4, apply_batched_logits_processor=True)])
        assert outs[0].outputs[0].token_ids == [7] * 4 and outs[2].outputs[0].token_ids == [7] * 4
        assert outs[1].outputs[0].token_ids != [7] * 4
        # One call per step with both opted-in requests together.
        assert max(len(c[0]) for c in calls) == 2 and all(shape == (1, 1, 256) for c in calls for shape in c[1])
        assert {r for c in calls for r in c[0]} == {int(outs[0].request_id), int(outs[2].request_id)}
    with LLM(tiny_llama, dtype="float32", max_batch_size=2, max_seq_len=64) as llm:
        with pytest.raises(ValueError, match="batched_logits_processor"):
            llm.generate(prompts[0], SamplingParams(apply_batched_logits_processor=True))


def test_top_p_decay_narrows_the_nucleus_to_greedy(llm, hf_tiny_llama, prompts):
    """top_p = max(0.95 * 0.01**t, 1e-6): from the third token on only the most likely token is
    left, so the continuation equals HF greedy decoding from there."""
    for prompt in prompts[:2]:
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, top_p=0.95, top_p_decay=0.01,
                                top_p_min=1e-6, seed=5, ignore_eos=True)
        tokens = llm.generate(prompt, params).outputs[0].token_ids
        head = tokens[:2]
        assert tokens[2:] == hf_greedy_processed(hf_tiny_llama, prompt + head, steps=MAX_TOKENS - 2)
    # Without decay the same seeded request is not greedy throughout (the check above is not vacuous).
    plain = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, top_p=0.95, seed=5, ignore_eos=True)
    tokens = llm.generate(prompts[0], plain).outputs[0].token_ids
    assert tokens[2:] != hf_greedy_processed(hf_tiny_llama, prompts[0] + tokens[:2], steps=MAX_TOKENS - 2)


def test_top_p_reset_ids_restore_the_nucleus(llm, prompts):
    """Decay to greedy, except right after the reset token: the token after it is sampled from
    the full nucleus again (so not always the greedy one), the tokens before are unchanged."""
    differs = []
    for seed in range(6):
        params = dict(max_tokens=4, temperature=1.0, top_p=1.0, top_p_decay=1e-3, seed=seed, ignore_eos=True)
        decayed = llm.generate(prompts[1], SamplingParams(**params)).outputs[0].token_ids
        if decayed[0] == decayed[1]:
            continue  # the reset would already apply after the first token
        reset = llm.generate(prompts[1], SamplingParams(top_p_reset_ids=decayed[1], **params)).outputs[0].token_ids
        assert reset[:2] == decayed[:2]  # identical until the reset token has been generated
        greedy_next = llm.generate(prompts[1] + decayed[:2], SamplingParams(max_tokens=1, temperature=0.0))
        greedy_next = greedy_next.outputs[0].token_ids[0]
        assert decayed[2] == greedy_next  # top_p 1e-6 by then: only the most likely token
        differs.append(reset[2] != decayed[2])
    assert len(differs) >= 3 and any(differs)


def test_end_id_replaces_the_models_end_token(llm, prompts):
    tokens = llm.generate(prompts[0], greedy()).outputs[0].token_ids
    out = llm.generate(prompts[0], SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, end_id=tokens[3]))
    assert out.outputs[0].token_ids == tokens[:tokens.index(tokens[3]) + 1]
    assert out.outputs[0].finish_reason == "stop"
    # end_id=-1: no end token at all (the model's EOS is just a token).
    eos = llm.model_config.eos_token_ids[0]
    forced_eos = SamplingParams(max_tokens=4, temperature=0.0, end_id=-1, embedding_bias=_one_hot(eos, 256, 50.0))
    out = llm.generate(prompts[0], forced_eos)
    assert out.outputs[0].token_ids == [eos] * 4 and out.outputs[0].finish_reason == "length"


def _one_hot(token: int, vocab: int, value: float) -> torch.Tensor:
    bias = torch.zeros(vocab)
    bias[token] = value
    return bias


@pytest.mark.parametrize("case", ["roomy", "chunked", "preempting", "overlapped"])
def test_context_and_generation_logits_equal_hugging_face(tiny_llama, hf_tiny_llama, case):
    """Also chunked (a 7-token budget), after preemption (the prompt is recomputed: each
    position's logits come once) and overlapped (generation logits copied asynchronously)."""
    prompts = make_prompts(hf_tiny_llama.config.vocab_size, count=6, seed=12)
    longest = max(len(p) for p in prompts) + MAX_TOKENS
    build = BuildConfig(max_batch_size=6, max_seq_len=longest + 8,
                        max_num_tokens=7 if case == "chunked" else 512)
    kv = KvCacheConfig(tokens_per_block=4, max_tokens=longest + 8 if case == "preempting" else None)
    with LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=kv) as llm:
        llm._engine.core.runner.supports_overlap = case == "overlapped"
        outs = llm.generate(prompts, greedy(return_context_logits=True, return_generation_logits=True))
        assert (llm._engine.core.scheduler.num_preemptions_total > 0) == (case == "preempting")
        assert (llm._engine.core.runner.num_placeholder_tokens > 0) == (case == "overlapped")
    for prompt, out in zip(prompts, outs):
        tokens = out.outputs[0].token_ids
        with torch.no_grad():
            ref = hf_tiny_llama(torch.tensor([prompt + tokens])).logits[0].float()  # [P + G, V]
        assert out.context_logits.shape == (len(prompt), 256)
        torch.testing.assert_close(out.context_logits, ref[:len(prompt)], atol=2e-4, rtol=1e-4)
        gen = out.outputs[0].generation_logits
        assert gen.shape == (len(tokens), 256)
        torch.testing.assert_close(gen, ref[len(prompt) - 1:-1], atol=2e-4, rtol=1e-4)


def test_exclude_input_from_output_false_puts_the_prompt_in_front(llm, prompts):
    plain = llm.generate(prompts[0], greedy()).outputs[0]
    out = llm.generate(prompts[0], greedy(exclude_input_from_output=False)).outputs[0]
    assert out.token_ids == prompts[0] + plain.token_ids


def test_streamed_diffs_with_the_prompt_in_front(llm, prompts):
    import asyncio

    async def collect():
        diffs = []
        async for snap in llm.generate_async(prompts[1], greedy(exclude_input_from_output=False), streaming=True):
            diffs.append(snap.outputs[0].token_ids_diff)
        return diffs

    diffs = asyncio.run(collect())
    assert diffs[0][:len(prompts[1])] == prompts[1]
    assert sum(diffs, []) == prompts[1] + llm.generate(prompts[1], greedy()).outputs[0].token_ids


@pytest.mark.parametrize("field,value,match", [
    ("bad_token_ids", [256], "bad_token_ids"), ("end_id", 256, "end_id"), ("pad_id", 999, "pad_id"),
    ("top_p_reset_ids", 300, "top_p_reset_ids"),
])
def test_token_ids_outside_the_vocabulary_raise(llm, prompts, field, value, match):
    with pytest.raises(ValueError, match=match):
        llm.generate(prompts[0], SamplingParams(max_tokens=2, **{field: value}))
    assert len(llm.generate(prompts[0], greedy()).outputs[0].token_ids) == MAX_TOKENS  # the engine still serves

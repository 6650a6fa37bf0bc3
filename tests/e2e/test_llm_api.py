"""The LLM API on the real SmolLM2-135M-Instruct GGUF: text, chat, streaming, stop strings,
logprobs against Hugging Face logits, n / best_of, seeds, abort, and bad input that must not
disturb other requests; with the engine in a thread and in its own process."""
from __future__ import annotations

import asyncio

import pytest
import torch

from tritium import SamplingParams

PROMPT = "The capital of France is"


@pytest.fixture(scope="module", params=["engine-thread", "engine-process"])
def llm(request, smol_llm):
    """Every test twice: the engine in a thread of this process, and in a child process."""
    if request.param == "engine-thread":
        yield smol_llm
        return
    from tritium.default_model import default_model_path
    from tritium.llm.llm import LLM

    with LLM(default_model_path(), dtype="float32", max_batch_size=16, max_seq_len=512, max_beam_width=4,
             engine_process=True) as llm:
        yield llm


def test_generate_text_matches_hugging_face_greedy(llm, hf_smol):
    params = SamplingParams(max_tokens=16, temperature=0.0)
    out = llm.generate(PROMPT, params)
    ids = llm.tokenizer.encode(PROMPT)
    with torch.no_grad():
        ref = hf_smol.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
    eos = set(llm.model_config.eos_token_ids)
    if any(t in eos for t in ref):  # HF keeps the EOS token too; both stop there
        ref = ref[:next(i for i, t in enumerate(ref) if t in eos) + 1]
    assert out.prompt == PROMPT
    assert out.outputs[0].token_ids == ref
    assert out.outputs[0].text == llm.tokenizer.decode(ref, skip_special_tokens=True)
    assert "Paris" in out.outputs[0].text


def test_logprobs_equal_log_softmax_of_hugging_face_logits(llm, hf_smol):
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=3, prompt_logprobs=2)
    out = llm.generate(PROMPT, params)
    comp = out.outputs[0]
    ids = out.prompt_token_ids + comp.token_ids
    with torch.no_grad():
        ref = torch.log_softmax(hf_smol(torch.tensor([ids])).logits[0].float(), dim=-1)  # [L, V]
    p = len(out.prompt_token_ids)
    assert len(comp.logprobs) == len(comp.token_ids)
    for i, (tok, entry) in enumerate(zip(comp.token_ids, comp.logprobs)):
        row = ref[p - 1 + i]
        assert tok in entry and entry[tok].rank == 1  # greedy picks the top token
        top = torch.topk(row, 3)
        assert set(entry) == set(top.indices.tolist())
        for tid, lp in entry.items():
            assert lp.logprob == pytest.approx(row[tid].item(), abs=2e-3)
    assert comp.cumulative_logprob == pytest.approx(sum(e[t].logprob for t, e in zip(comp.token_ids, comp.logprobs)))
    # Prompt logprobs: None for the first token, then the logprob of each next prompt token.
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == p
    for j in range(1, p):
        tok = out.prompt_token_ids[j]
        assert out.prompt_logprobs[j][tok].logprob == pytest.approx(ref[j - 1, tok].item(), abs=2e-3)


def test_stop_string_across_token_boundaries(llm):
    free = llm.generate(PROMPT, SamplingParams(max_tokens=24, temperature=0.0)).outputs[0]
    # A stop string that starts inside one token and ends inside a later one.
    text = free.text
    start = len(text) // 3
    stop = text[start:start + 6]
    assert len(stop.strip()) >= 3
    out = llm.generate(PROMPT, SamplingParams(max_tokens=24, temperature=0.0, stop=[stop])).outputs[0]
    assert out.text == text[:text.index(stop)]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    kept = llm.generate(PROMPT, SamplingParams(max_tokens=24, temperature=0.0, stop=stop,
                                               include_stop_str_in_output=True)).outputs[0]
    assert kept.text == text[:text.index(stop) + len(stop)]


def test_stop_token_ids_and_min_tokens(llm):
    free = llm.generate(PROMPT, SamplingParams(max_tokens=10, temperature=0.0)).outputs[0]
    stop_tok = free.token_ids[3]
    out = llm.generate(PROMPT, SamplingParams(max_tokens=10, temperature=0.0, stop_token_ids=[stop_tok])).outputs[0]
    first = free.token_ids.index(stop_tok)
    assert out.token_ids == free.token_ids[:first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_tok


def test_streaming_yields_incremental_text(llm):
    params = SamplingParams(max_tokens=20, temperature=0.0)

    async def collect():
        pieces, last = [], None
        async for last in llm.generate_async("Once upon a time, in a small village by the sea,", params, streaming=True):
            pieces.append(last.outputs[0].text_diff)
        return pieces, last

    pieces, final = asyncio.run(collect())
    assert final.finished and len(pieces) > 3
    assert "".join(pieces) == final.outputs[0].text
    assert all("\ufffd" not in p for p in pieces)
    assert final.outputs[0].text == llm.generate("Once upon a time, in a small village by the sea,", params).outputs[0].text


def test_streaming_never_splits_utf8(llm):
    # This prompt makes the model emit emoji and CJK punctuation, several byte-level tokens each.
    ids = llm.tokenizer.encode(" café 🎉🎉 naïve 東京")
    params = SamplingParams(max_tokens=8, temperature=0.0)

    async def run():
        return [o async for o in llm.generate_async(ids, params, streaming=True)]

    snaps = asyncio.run(run())
    final = snaps[-1].outputs[0]
    # Before the end no piece carries half a character; the pieces add up to the full decode
    # (which may itself end in an unfinished character when max_tokens cuts one in half).
    assert all("\ufffd" not in s.outputs[0].text_diff for s in snaps[:-1])
    assert "".join(s.outputs[0].text_diff for s in snaps) == llm.tokenizer.decode(final.token_ids)
    held_back = [s for s in snaps[:-1] if s.outputs[0].token_ids_diff and not s.outputs[0].text_diff]
    assert held_back, "a multi-byte character spanning tokens should have been held back at least once"


def test_seeds_reproduce_whatever_the_batch(llm):
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=1234)
    alone = llm.generate(PROMPT, params).outputs[0].token_ids
    batch = llm.generate(["Hello there", PROMPT, "Once upon a time"],
                         [SamplingParams(max_tokens=12, temperature=1.0), params,
                          SamplingParams(max_tokens=5, temperature=0.7, seed=9)])
    assert batch[1].outputs[0].token_ids == alone
    other = llm.generate(PROMPT, SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=4321))
    assert other.outputs[0].token_ids != alone


def test_n_and_best_of(llm):
    out = llm.generate(PROMPT, SamplingParams(max_tokens=8, temperature=1.0, n=3, seed=7))
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    # best_of=4, n=2 keeps the two most likely of the same four seeded sequences that n=4 returns.
    all_four = llm.generate(PROMPT, SamplingParams(max_tokens=8, temperature=1.0, n=4, seed=7, logprobs=0))
    ranked = sorted(all_four.outputs, key=lambda c: -c.cumulative_logprob)
    best = llm.generate(PROMPT, SamplingParams(max_tokens=8, temperature=1.0, n=2, best_of=4, seed=7))
    assert [c.token_ids for c in best.outputs] == [c.token_ids for c in ranked[:2]]
    assert [c.index for c in best.outputs] == [0, 1] and best.outputs[0].logprobs is None
    scores = [c.cumulative_logprob for c in best.outputs]
    assert scores == pytest.approx([c.cumulative_logprob for c in ranked[:2]])


def test_chat_uses_the_models_template(llm):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    expected_prompt = llm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    out = llm.chat(messages, SamplingParams(max_tokens=16, temperature=0.0))
    assert out.prompt == expected_prompt
    assert "Paris" in out.outputs[0].text


def test_abort_ends_a_stream(llm):
    async def run():
        stream = llm.generate_async(PROMPT, SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True),
                                    streaming=True)
        seen = 0
        async for snap in stream:
            seen += 1
            if seen == 3:
                stream.abort()
        return snap

    final = asyncio.run(run())
    assert final.finished and final.outputs[0].finish_reason == "abort"
    assert len(final.outputs[0].token_ids) < 400


@pytest.mark.parametrize("bad", [
    dict(prompts=""),
    dict(prompts=[]),
    dict(prompts=[[]]),
    dict(prompts=[[1, 2, 10**9]]),
    dict(prompts=[[-1, 5]]),
    dict(prompts=[list(range(600))]),
    dict(prompts=["ok", 3]),
])
def test_bad_prompts_raise_and_other_requests_continue(llm, bad):
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    stream = llm.generate_async(PROMPT, params)  # in flight while the bad request arrives
    with pytest.raises(ValueError):
        llm.generate(bad["prompts"], SamplingParams(max_tokens=4))
    result = stream.result(timeout=120)
    assert result.finished and len(result.outputs[0].token_ids) == 30
    ok = llm.generate(PROMPT, SamplingParams(max_tokens=4, temperature=0.0))
    assert ok.outputs[0].finish_reason == "length"


@pytest.mark.parametrize("field", ["logprobs", "prompt_logprobs"])
def test_too_many_logprobs_raise_and_other_requests_continue(llm, field):
    vocab = llm.model_config.vocab_size
    stream = llm.generate_async(PROMPT, SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))
    with pytest.raises(ValueError, match=f"SamplingParams.{field}"):
        llm.generate(PROMPT, SamplingParams(max_tokens=2, **{field: vocab + 1}))
    result = stream.result(timeout=120)
    assert result.finished and len(result.outputs[0].token_ids) == 30
    out = llm.generate(PROMPT, SamplingParams(max_tokens=2, **{field: vocab}))  # the whole vocabulary is fine
    assert out.outputs[0].finish_reason == "length"


def test_bad_prompt_messages_name_the_problem(llm):
    with pytest.raises(ValueError, match="empty"):
        llm.generate("", SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([[5, 10**9]], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="max_seq_len"):
        llm.generate([list(range(600))], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="2 sampling_params for 1 prompts"):
        llm.generate(["a"], [SamplingParams(), SamplingParams()])


def test_generation_stops_at_max_seq_len(llm):
    prompt = list(range(100, 100 + 505))
    out = llm.generate([prompt], SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 512 - 505
    assert out.outputs[0].finish_reason == "length"


# ---- guided decoding (structured output) ------------------------------------------------------
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def test_guided_json_schema_greedy_and_sampled(llm):
    import json

    import jsonschema

    from tritium import GuidedDecodingParams

    prompt = llm.apply_chat_template([{"role": "user", "content": "Describe a person."}])
    guided = GuidedDecodingParams(json=PERSON)
    outs = llm.generate([prompt, prompt], [SamplingParams(max_tokens=60, temperature=0, guided_decoding=guided),
                                           SamplingParams(max_tokens=60, temperature=1.0, seed=11, n=2,
                                                          guided_decoding=guided)])
    completions = [c for out in outs for c in out.outputs]
    assert len(completions) == 3
    for c in completions:
        assert c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.text), PERSON)


def test_guided_regex_and_grammar(llm):
    import re

    from tritium import GuidedDecodingParams

    prompt = llm.apply_chat_template([{"role": "user", "content": "Give me a phone number."}])
    out = llm.generate(prompt, SamplingParams(max_tokens=20, temperature=0.8, seed=2,
                                              guided_decoding=GuidedDecodingParams(regex=r"[0-9]{3}-[0-9]{4}")))
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", out.outputs[0].text)
    out = llm.generate(prompt, SamplingParams(max_tokens=10, temperature=0,
                                              guided_decoding=GuidedDecodingParams(grammar='start: "yes" | "no"')))
    assert out.outputs[0].text in ("yes", "no")


def test_guided_bad_schema_is_rejected_up_front(llm):
    from tritium import GuidedDecodingParams

    with pytest.raises(ValueError, match="guided decoding"):
        llm.generate("hi", SamplingParams(guided_decoding=GuidedDecodingParams(json={"type": "nope"})))

"""SamplingParams options that need the tokenizer, on the embedded SmolLM2 model: `bad` strings
against Hugging Face's bad_words_ids, spaces_between_special_tokens, truncation; and
perf metrics and engine statistics of a beam search."""
from __future__ import annotations

import re

import pytest
import torch

from tritium import SamplingParams

PROMPT = "The capital of France is"


def test_bad_strings_equal_hugging_face(smol_llm, hf_smol):
    ids = smol_llm.tokenizer.encode(PROMPT)
    bad = [" Paris", "The capital"]
    out = smol_llm.generate(PROMPT, SamplingParams(max_tokens=8, temperature=0.0, bad=bad))
    words = [smol_llm.tokenizer.encode(w, add_special_tokens=False) for w in bad]
    with torch.no_grad():  # HF applies NoBadWordsLogitsProcessor for bad_words_ids
        ref = hf_smol.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=8, do_sample=False, bad_words_ids=words)[0, len(ids):].tolist()
    assert out.outputs[0].token_ids == ref
    assert "Paris" not in out.outputs[0].text  # what greedy decoding says without the ban
    with pytest.raises(ValueError, match="SamplingParams.bad"):
        SamplingParams(bad=[""])


def test_spaces_between_special_tokens(smol_llm):
    im_end = smol_llm.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def force_im_end_third(req_id, logits, token_ids, stream_ptr, client_id):
        if len(token_ids[0]) - len(smol_llm.tokenizer.encode(PROMPT)) == 2:
            logits[:, :, :] = float("-inf")
            logits[:, :, im_end] = 0.0

    def text(**kwargs) -> str:
        params = SamplingParams(max_tokens=5, temperature=0.0, end_id=-1, logits_processor=force_im_end_third, **kwargs)
        return smol_llm.generate(PROMPT, params).outputs[0].text

    plain = text(skip_special_tokens=False)
    assert plain == text(skip_special_tokens=False, spaces_between_special_tokens=False) and "<|im_end|>" in plain
    spaced = text(skip_special_tokens=False, spaces_between_special_tokens=True)
    assert " <|im_end|> " in spaced
    # The same text with one space on each side of every special token (as slow tokenizers did).
    assert re.sub(r"(<\|[a-z_]+\|>) ", r"\1", re.sub(r" (<\|[a-z_]+\|>)", r"\1", spaced)) == plain
    assert text(spaces_between_special_tokens=True) == text()  # skipped special tokens leave nothing to space


def test_truncated_prompt_generates_as_the_kept_tokens(smol_llm):
    ids = smol_llm.tokenizer.encode(PROMPT)
    params = dict(max_tokens=6, temperature=0.0)
    out = smol_llm.generate(PROMPT, SamplingParams(truncate_prompt_tokens=3, **params))
    assert out.prompt_token_ids == ids[-3:] and out.prompt == PROMPT
    assert out.outputs[0].token_ids == smol_llm.generate([ids[-3:]], SamplingParams(**params))[0].outputs[0].token_ids


def test_beam_search_perf_metrics_and_stats(smol_llm):
    smol_llm.get_stats()  # drop earlier steps
    out = smol_llm.generate(PROMPT, SamplingParams(max_tokens=6, use_beam_search=True, n=3, end_id=-1,
                                                   return_perf_metrics=True))
    stats = smol_llm.get_stats()
    for completion in out.outputs:
        perf = completion.request_perf_metrics
        assert len(perf.token_times) == len(completion.token_ids) == 6
        assert perf.arrival_time <= perf.first_token_time and perf.token_times == sorted(perf.token_times)
    # The prompt's step yields one beam's candidates, then each of the 5 steps three.
    assert sum(s.num_generation_tokens for s in stats) == 1 + 3 * 5


def test_guided_json_through_the_overlapped_engine(smol_llm):
    """A guided request runs synchronously (its grammar sees every token before masking the next)
    while a plain one in the same batch keeps overlapping; the JSON validates."""
    import json

    import jsonschema

    from tritium import GuidedDecodingParams

    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                               "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"], "additionalProperties": False}
    runner = smol_llm._engine.core.runner
    before = runner.num_placeholder_tokens
    runner.supports_overlap = True  # the GPU's pipelined steps, on the CPU (tests/e2e/test_overlap.py)
    try:
        prompt = smol_llm.apply_chat_template([{"role": "user", "content": "Describe a city in JSON."}])
        guided, plain = smol_llm.generate([prompt, prompt], [
            SamplingParams(max_tokens=100, temperature=0.0, guided_decoding=GuidedDecodingParams(json=schema)),
            SamplingParams(max_tokens=120, temperature=0.0, ignore_eos=True)])  # outlives the guided one
    finally:
        runner.supports_overlap = False
    jsonschema.validate(json.loads(guided.outputs[0].text), schema)
    assert len(plain.outputs[0].token_ids) == 120 and runner.num_placeholder_tokens > before

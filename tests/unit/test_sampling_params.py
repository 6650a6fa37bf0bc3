"""Every invalid SamplingParams field is a ValueError that names the field."""
from __future__ import annotations

import pytest

from tritium import SamplingParams

INVALID = [
    ("max_tokens", 0), ("max_tokens", -3), ("max_tokens", 2.5), ("max_tokens", "10"),
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", "hot"),
    ("top_k", -2), ("top_k", 1.5),
    ("top_p", 1.01), ("top_p", -1),
    ("min_p", -0.1), ("min_p", 1.5),
    ("repetition_penalty", 0.0), ("repetition_penalty", -1.0),
    ("presence_penalty", 2.5), ("presence_penalty", -3),
    ("frequency_penalty", 2.01), ("frequency_penalty", -2.5),
    ("seed", 1.5), ("seed", "abc"),
    ("stop", ""), ("stop", [""]), ("stop", [1]), ("stop", 5),
    ("stop_token_ids", [-1]), ("stop_token_ids", ["a"]), ("stop_token_ids", 3),
    ("min_tokens", -1),
    ("n", 0), ("n", 1.0),
    ("logprobs", -1), ("logprobs", 1.5),
    ("prompt_logprobs", -2),
]


@pytest.mark.parametrize("field,value", INVALID)
def test_invalid_field_raises_value_error_naming_it(field, value):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}\b"):
        SamplingParams(**{field: value})


def test_cross_field_rules():
    with pytest.raises(ValueError, match="SamplingParams.min_tokens"):
        SamplingParams(max_tokens=4, min_tokens=5)
    with pytest.raises(ValueError, match="SamplingParams.best_of"):
        SamplingParams(n=3, best_of=2)
    # Stop strings are found in the text: without detokenizing they would be silently ignored.
    with pytest.raises(ValueError, match="SamplingParams.stop"):
        SamplingParams(stop=["\n"], detokenize=False)


def test_defaults_and_normalisation():
    p = SamplingParams(stop="###", top_k=-1, n=2, seed=5)
    assert p.stop_strings == ["###"] and p.top_k == 0 and p.best_of == 2
    assert not p.is_greedy and SamplingParams(temperature=0).is_greedy and SamplingParams(top_k=1).is_greedy
    child = p.child(1)
    assert child.n == 1 and child.best_of == 1 and child.seed == 6 and p.seed == 5


def test_children_of_best_of():
    p = SamplingParams(n=1, best_of=3, seed=10, prompt_logprobs=2)
    kids = [p.child(i) for i in range(3)]
    assert [k.seed for k in kids] == [10, 11, 12]
    assert [k.prompt_logprobs for k in kids] == [2, None, None]  # computed once, by child 0
    assert all(k.logprobs == 0 for k in kids)  # ranking needs each sequence's logprob
    assert SamplingParams(n=2, logprobs=None).child(1).logprobs is None


TRTLLM_INVALID = [
    ("end_id", -2), ("end_id", 1.0), ("pad_id", -1), ("bad", [""]), ("bad", 3), ("bad_token_ids", [-1]),
    ("embedding_bias", [0.0, 1.0]), ("logits_processor", 5), ("logits_processor", [print, 5]),
    ("top_p_min", 0.0), ("top_p_decay", 1.5), ("top_p_reset_ids", -1), ("no_repeat_ngram_size", 0),
    ("truncate_prompt_tokens", 0),
]
BEAM_INVALID = [("length_penalty", "long"), ("early_stopping", "sometimes"), ("beam_width_array", []),
                ("beam_width_array", [2] * 9), ("beam_search_diversity_rate", -1.0)]


@pytest.mark.parametrize("field,value", TRTLLM_INVALID)
def test_invalid_trtllm_field_raises_naming_it(field, value):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}\b"):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("field,value", BEAM_INVALID)
def test_invalid_beam_field_raises_naming_it(field, value):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}\b"):
        SamplingParams(use_beam_search=True, **{field: value})


def test_trtllm_argument_forms():
    # None means "the default", as in TensorRT-LLM's signature; logprobs=True means one.
    p = SamplingParams(temperature=None, top_k=None, top_p=None, min_p=None, repetition_penalty=None,
                       min_tokens=None, logprobs=True, prompt_logprobs=False)
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty, p.min_tokens) == (1.0, 0, 1.0, 0.0, 1.0, 0)
    assert p.logprobs == 1 and p.prompt_logprobs is None
    assert SamplingParams(top_p=0.0).is_greedy  # TensorRT-LLM: top_p=0 is greedy
    assert SamplingParams(end_id=7).pad_id == 7  # pad_id defaults to end_id
    beam = SamplingParams(use_beam_search=True, n=2, best_of=3)
    assert beam.beam_width == 3 and beam.needs_host_tokens
    assert SamplingParams(use_beam_search=True, n=2, beam_width_array=[1, 4, 2]).beam_width == 4
    assert not SamplingParams().needs_host_tokens and not SamplingParams(embedding_bias=None).needs_host_tokens
    assert SamplingParams(no_repeat_ngram_size=2).needs_host_tokens
    assert SamplingParams(top_p=0.9, top_p_decay=0.5).needs_host_tokens
    assert not SamplingParams(temperature=0, top_p_decay=0.5).needs_host_tokens  # greedy: nothing to decay


def test_fields_the_others_rule_out():
    with pytest.raises(ValueError, match="SamplingParams.top_p"):
        SamplingParams(use_beam_search=True, top_p=0.5)
    with pytest.raises(ValueError, match="SamplingParams.length_penalty.*use_beam_search"):
        SamplingParams(length_penalty=1.0)
    with pytest.raises(ValueError, match="SamplingParams.beam_width_array"):
        SamplingParams(use_beam_search=True, n=3, beam_width_array=[4, 2])  # ends narrower than n


def test_only_child_zero_returns_the_context_logits():
    p = SamplingParams(n=2, seed=1, return_context_logits=True)
    assert [p.child(i).return_context_logits for i in range(2)] == [True, False]

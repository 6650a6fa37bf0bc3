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

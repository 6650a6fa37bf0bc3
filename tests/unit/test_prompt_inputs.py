"""Prompt normalisation: shapes the API accepts, and no double BOS from chat templates."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tritium.llm.inputs import normalize_prompts, tokenize_prompt


@pytest.fixture(scope="module")
def bos_tokenizer():
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "hello": 3, "world": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_bos_is_added_once(bos_tokenizer):
    assert tokenize_prompt("hello world", bos_tokenizer, 5, 100).token_ids == [0, 3, 4]
    assert tokenize_prompt("<s> hello world", bos_tokenizer, 5, 100).token_ids == [0, 3, 4]


@pytest.mark.parametrize("prompts,single,count", [
    ("text", True, 1), ([1, 2, 3], True, 1), (["a", "b"], False, 2), ([[1], [2, 3]], False, 2), (["a", [4]], False, 2),
])
def test_accepted_prompt_shapes(prompts, single, count):
    items, is_single = normalize_prompts(prompts)
    assert is_single == single and len(items) == count


def test_add_special_tokens_and_truncation(bos_tokenizer):
    from tritium import SamplingParams

    assert tokenize_prompt("hello world", bos_tokenizer, 5, 100,
                           SamplingParams(add_special_tokens=False)).token_ids == [3, 4]
    truncated = tokenize_prompt("hello world world hello", bos_tokenizer, 5, 100,
                                SamplingParams(truncate_prompt_tokens=2))
    assert truncated.token_ids == [4, 3] and truncated.prompt == "hello world world hello"  # the last 2, text as given
    longer = SamplingParams(truncate_prompt_tokens=5)
    assert tokenize_prompt([3, 4, 3], bos_tokenizer, 5, 100, longer).token_ids == [3, 4, 3]
    with pytest.raises(ValueError, match="max_input_len=2"):
        tokenize_prompt("hello world", bos_tokenizer, 5, 100, max_input_len=2)

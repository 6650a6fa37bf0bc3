"""Prompt normalisation and validation: every bad input is a ValueError naming the problem,
raised before anything reaches the engine, so other requests are never disturbed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from tritium.sampling_params import SamplingParams

PromptInput = Union[str, Sequence[int]]


@dataclass
class TokenizedPrompt:
    prompt: Optional[str]
    token_ids: list[int]


def _is_token_list(x) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def normalize_prompts(prompts) -> tuple[list[PromptInput], bool]:
    """-> (list of single prompts, whether the caller passed a single prompt)."""
    if isinstance(prompts, str):
        return [prompts], True
    if isinstance(prompts, (list, tuple)):
        if len(prompts) == 0:
            raise ValueError("prompts is empty: pass a string, a list of strings, or token-id lists")
        if _is_token_list(prompts):
            return [list(prompts)], True
        for i, p in enumerate(prompts):
            if not isinstance(p, str) and not _is_token_list(p):
                raise ValueError(f"prompts[{i}] must be a string or a list of token ids, got {type(p).__name__}")
        return list(prompts), False
    raise ValueError(f"prompts must be a string, a list of strings or token-id lists, got {type(prompts).__name__}")


def normalize_params(params, num_prompts: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams() for _ in range(num_prompts)]
    if isinstance(params, SamplingParams):
        return [params] * num_prompts
    if isinstance(params, (list, tuple)):
        if len(params) != num_prompts:
            raise ValueError(f"got {len(params)} sampling_params for {num_prompts} prompts; pass one, or one per prompt")
        for i, p in enumerate(params):
            if not isinstance(p, SamplingParams):
                raise ValueError(f"sampling_params[{i}] must be a SamplingParams, got {type(p).__name__}")
        return list(params)
    raise ValueError(f"sampling_params must be a SamplingParams or a list of them, got {type(params).__name__}")


def tokenize_prompt(prompt: PromptInput, tokenizer, vocab_size: int, max_seq_len: int) -> TokenizedPrompt:
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer; this model has none, so pass token ids")
        # A prompt that already starts with the BOS text (chat templates write it) must not get a second one.
        bos = getattr(tokenizer, "bos_token", None)
        token_ids = tokenizer.encode(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))
        text = prompt
    else:
        token_ids = list(prompt)
        text = None
    if not token_ids:
        raise ValueError("the prompt is empty: it must hold at least one token")
    bad = [t for t in token_ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab_size})")
    if text is None and tokenizer is not None:
        text = tokenizer.decode(token_ids)
    if len(token_ids) >= max_seq_len:
        raise ValueError(
            f"the prompt has {len(token_ids)} tokens; max_seq_len={max_seq_len} leaves no room to generate")
    return TokenizedPrompt(prompt=text, token_ids=token_ids)

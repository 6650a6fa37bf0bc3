"""Prompt normalisation and validation: every bad input is a ValueError naming the problem,
raised before anything reaches the engine, so other requests are never disturbed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from tritium.sampling_params import SamplingParams

PromptInput = Union[str, Sequence[int]]


@dataclass(frozen=True)
class EngineLimits:
    """What a request is checked against before it reaches the engine."""

    vocab_size: int
    max_seq_len: int
    max_beam_width: int = 1
    max_input_len: Optional[int] = None
    num_kv_blocks: Optional[int] = None
    block_size: int = 16
    has_batched_processor: bool = False


def check_params(p: SamplingParams, tokenizer, limits: EngineLimits) -> None:
    """ValueError naming the field when this engine cannot honour the params (the params alone
    are checked on construction)."""
    vocab_size = limits.vocab_size
    if (p.stop_strings or p.bad) and tokenizer is None:
        raise ValueError(f"SamplingParams.{'stop' if p.stop_strings else 'bad'} needs a tokenizer; this model has none")
    for name in ("logprobs", "prompt_logprobs"):
        k = getattr(p, name)
        if k is not None and k > vocab_size:  # would fail the whole engine step (topk)
            raise ValueError(f"SamplingParams.{name}={k} exceeds the vocabulary size {vocab_size}")
    for name in ("end_id", "pad_id", "top_p_reset_ids"):
        token = getattr(p, name)
        if token is not None and token >= vocab_size:
            raise ValueError(f"SamplingParams.{name}={token} is outside the vocabulary [0, {vocab_size})")
    for name in ("stop_token_ids", "bad_token_ids"):
        outside = [t for t in getattr(p, name) if t >= vocab_size]
        if outside:
            raise ValueError(f"SamplingParams.{name} holds {outside[0]}, outside the vocabulary [0, {vocab_size})")
    if p.embedding_bias is not None and p.embedding_bias.numel() != vocab_size:
        raise ValueError(f"SamplingParams.embedding_bias has {p.embedding_bias.numel()} values; the model's "
                         f"vocabulary has {vocab_size}")
    if p.apply_batched_logits_processor and not limits.has_batched_processor:
        raise ValueError("SamplingParams.apply_batched_logits_processor needs LLM(batched_logits_processor=...)")
    if p.use_beam_search and p.beam_width > limits.max_beam_width:
        raise ValueError(f"SamplingParams: beam search of width {p.beam_width} needs an engine built with "
                         f"max_beam_width >= {p.beam_width} (LLM(max_beam_width=...) or BuildConfig.max_beam_width); "
                         f"this one has {limits.max_beam_width}")
    if p.bad:
        p.setup_bad_words(tokenizer)


def check_beam_fits(prompt_token_ids: list[int], p: SamplingParams, limits: EngineLimits) -> None:
    """A beam search whose beams could never all be in the KV cache at once would wait forever."""
    if not p.use_beam_search or limits.num_kv_blocks is None:
        return
    longest = limits.max_seq_len if p.max_tokens is None else min(limits.max_seq_len,
                                                                   len(prompt_token_ids) + p.max_tokens)
    blocks = p.beam_width * -(-longest // limits.block_size)  # a copied block replaces the one it copies
    if blocks > limits.num_kv_blocks:
        raise ValueError(f"SamplingParams: {p.beam_width} beams of up to {longest} tokens need up to {blocks} KV "
                         f"cache blocks; the cache has {limits.num_kv_blocks}: lower max_tokens or the beam width, "
                         "or give the cache more memory")


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


def tokenize_prompt(prompt: PromptInput, tokenizer, vocab_size: int, max_seq_len: int,
                    params: Optional[SamplingParams] = None, max_input_len: Optional[int] = None) -> TokenizedPrompt:
    """params: add_special_tokens (BOS for text prompts) and truncate_prompt_tokens (keep the
    last k tokens) apply; max_input_len: the engine's longest prompt (None: max_seq_len - 1)."""
    add_special = params.add_special_tokens if params is not None else True
    truncate = params.truncate_prompt_tokens if params is not None else None
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer; this model has none, so pass token ids")
        # A prompt that already starts with the BOS text (chat templates write it) must not get a second one.
        bos = getattr(tokenizer, "bos_token", None)
        token_ids = tokenizer.encode(prompt, add_special_tokens=add_special and not (bos and prompt.startswith(bos)))
        text = prompt
    else:
        token_ids = list(prompt)
        text = None
    if truncate is not None:
        token_ids = token_ids[-truncate:]
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
    if max_input_len is not None and len(token_ids) > max_input_len:
        raise ValueError(f"the prompt has {len(token_ids)} tokens, more than max_input_len={max_input_len}")
    return TokenizedPrompt(prompt=text, token_ids=token_ids)

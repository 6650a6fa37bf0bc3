"""Per-request logits work beyond the sampler's own tensors (TensorRT-LLM's SamplingParams):
user logits processors (per request, and the LLM's batched one), embedding_bias, bad words and
no_repeat_ngram_size bans, and top_p decay.

The runner builds a LogitsExtras only for steps where some row uses one of these (the hot path
never builds or checks more than `meta.logits_extras is None`); the sampler applies it to its
float32 copy of the logits before penalties, in TensorRT-LLM's order: processors, then bias, then
bans. Rows using any of these run without overlapped scheduling (their tokens are read on the
host), see SamplingParams.needs_host_tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch


@dataclass
class ProcessorCall:
    """One request's rows (its beams; one row without beam search) for its logits callbacks."""

    rows: list[int]
    req_id: object  # the LLM's request id (an int for LLM-made ids)
    token_ids: list[list[int]]  # per row: prompt + generated tokens
    processors: Sequence[Callable] = ()
    batched: bool = False  # also goes to the LLM's batched processor


@dataclass
class LogitsExtras:
    calls: list[ProcessorCall] = field(default_factory=list)
    batched_processor: Optional[Callable] = None
    bias_rows: list[int] = field(default_factory=list)
    biases: list[torch.Tensor] = field(default_factory=list)  # each [V] float32 on the logits' device
    banned_rows: list[int] = field(default_factory=list)  # (row, token) pairs whose logit becomes -inf
    banned_cols: list[int] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.calls or self.bias_rows or self.banned_rows)


def user_request_id(req_id: str) -> object:
    """The id the user's LLM call got, from an engine request id ("7", "7#1" for best_of child 1,
    "7#beam2" for beam 2): an int when it is one, as TensorRT-LLM passes it."""
    base = req_id.split("#", 1)[0]
    return int(base) if base.isdigit() else base


def apply_logits_extras(logits: torch.Tensor, extras: LogitsExtras) -> None:
    """In place on logits [N, V] float32."""
    if extras.calls:
        _run_processors(logits, extras)
    for row, bias in zip(extras.bias_rows, extras.biases):
        logits[row] += bias
    if extras.banned_rows:
        index = torch.tensor([extras.banned_rows, extras.banned_cols], dtype=torch.long).to(logits.device,
                                                                                           non_blocking=True)
        logits.index_put_((index[0], index[1]), torch.full((len(extras.banned_rows),), float("-inf"),
                                                           device=logits.device))


def _run_processors(logits: torch.Tensor, extras: LogitsExtras) -> None:
    stream = torch.cuda.current_stream(logits.device).cuda_stream if logits.is_cuda else None
    batched = [c for c in extras.calls if c.batched]
    views = {}
    for call in extras.calls:
        # [1, beams, V]: TensorRT-LLM's layout (tokens, beams, vocab); a copy, written back below.
        views[id(call)] = logits[call.rows].unsqueeze(0)
        for processor in call.processors:
            processor(call.req_id, views[id(call)], call.token_ids, stream, None)
    if batched:
        extras.batched_processor([c.req_id for c in batched], [views[id(c)] for c in batched],
                                 [c.token_ids for c in batched], stream, [None] * len(batched))
    for call in extras.calls:
        logits[call.rows] = views[id(call)][0]


def bad_word_bans(token_ids: Sequence[int], bad_words: Sequence[Sequence[int]]) -> list[int]:
    """Tokens that would complete a bad word: its last token where the sequence ends with the rest
    of it (a one-token word is always banned)."""
    banned = []
    for word in bad_words:
        prefix_len = len(word) - 1
        if prefix_len == 0 or (len(token_ids) >= prefix_len and list(token_ids[-prefix_len:]) == list(word[:-1])):
            banned.append(word[-1])
    return banned


class NGramIndex:
    """no_repeat_ngram_size=n: the tokens that would repeat an n-gram of the sequence so far.
    Kept incrementally (each step indexes only the new n-grams) over prompt + generated tokens."""

    def __init__(self, n: int):
        self.n = n
        self._next: dict[tuple[int, ...], set[int]] = {}  # (n-1)-gram -> tokens seen after it
        self._num_indexed = 0  # tokens whose n-gram ending there is indexed

    def banned(self, token_ids: Sequence[int]) -> list[int]:
        n = self.n
        for end in range(max(self._num_indexed, n), len(token_ids) + 1):
            self._next.setdefault(tuple(token_ids[end - n:end - 1]), set()).add(token_ids[end - 1])
        self._num_indexed = max(self._num_indexed, len(token_ids) + 1)
        if len(token_ids) + 1 < n:
            return []
        return sorted(self._next.get(tuple(token_ids[len(token_ids) - n + 1:]), ()))


class TopPDecay:
    """TensorRT-LLM's top_p decay (Factuality Enhanced LMs, Lee et al. 2022): the first token is
    sampled with top_p; after each token, top_p becomes max(top_p * decay, top_p_min), or goes back
    to top_p when that token is top_p_reset_ids. Replayed from the output tokens, so a request
    resumed after preemption continues where it was."""

    def __init__(self, top_p: float, decay: float, minimum: Optional[float], reset_id: Optional[int]):
        self.initial, self.decay, self.reset_id = top_p, decay, reset_id
        self.minimum = 1e-6 if minimum is None else minimum  # TensorRT-LLM's default floor
        self.value = top_p
        self._num_applied = 0

    def current(self, output_token_ids: Sequence[int]) -> float:
        for token in output_token_ids[self._num_applied:]:
            self.value = self.initial if token == self.reset_id else max(self.value * self.decay, self.minimum)
        self._num_applied = len(output_token_ids)
        return self.value

"""Runner-side state of the per-request sampling features that SamplingMetadata does not cover
(TensorRT-LLM's logits processors, embedding_bias, bad words, no_repeat_ngram_size, top_p decay,
end_id): kept per request while the runner holds it, turned into one step's LogitsExtras, params
and end-of-sequence ids by prepare(). Requests without these features are never looked at.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from tritium.layers.logits_processors import (LogitsExtras, NGramIndex, ProcessorCall, TopPDecay, bad_word_bans,
                                              user_request_id)
from tritium.sampling_params import SamplingParams


def has_features(params: SamplingParams) -> bool:
    return bool(params.logits_processor or params.apply_batched_logits_processor or params.embedding_bias is not None
                or params.bad_words_token_ids or params.no_repeat_ngram_size is not None
                or params.decays_top_p or params.end_id is not None)


@dataclass
class _FeatureState:
    bias: Optional[torch.Tensor]  # [V] float32 on the runner's device
    ngrams: Optional[NGramIndex]
    top_p: Optional[TopPDecay]
    end_ids: Optional[frozenset[int]]  # replaces the model's EOS ids (end_id)


@dataclass
class StepSampling:
    params: list[SamplingParams]  # per row; a copy where this step's top_p differs (decay)
    logits_extras: Optional[LogitsExtras]
    eos_token_ids: object  # the model's EOS ids, or one collection per row when some row has end_id


class SamplingFeatures:
    def __init__(self, device: torch.device, vocab_size: int, eos_token_ids: Sequence[int],
                 batched_processor: Optional[Callable] = None):
        self.device = device
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(eos_token_ids)
        self.batched_processor = batched_processor
        self._states: dict[str, _FeatureState] = {}

    @property
    def active(self) -> bool:
        return bool(self._states)

    def add(self, req_id: str, params: SamplingParams) -> None:
        if not has_features(params):
            return
        bias = params.embedding_bias
        if bias is not None:
            if bias.numel() != self.vocab_size:
                raise ValueError(f"SamplingParams.embedding_bias has {bias.numel()} values; the model's vocabulary "
                                 f"has {self.vocab_size}")
            bias = bias.to(self.device, torch.float32)
        top_p = (TopPDecay(params.top_p, params.top_p_decay, params.top_p_min, params.top_p_reset_ids)
                 if params.decays_top_p else None)
        end_ids = None
        if params.end_id is not None:
            end_ids = frozenset() if params.end_id == -1 else frozenset([params.end_id])
        self._states[req_id] = _FeatureState(
            bias=bias, ngrams=NGramIndex(params.no_repeat_ngram_size) if params.no_repeat_ngram_size else None,
            top_p=top_p, end_ids=end_ids)

    def remove(self, req_id: str) -> None:
        self._states.pop(req_id, None)

    def prepare(self, req_ids: Sequence[str], params: list[SamplingParams], token_ids: Sequence[list[int]],
                num_prompt_tokens: Sequence[int], groups: Optional[Sequence[list[int]]] = None) -> StepSampling:
        """One step's sampling rows -> their params, logits extras and EOS ids. token_ids: each row's
        prompt + generated tokens (complete: these requests run without overlap); groups: the rows
        of each request (a beam search's beams together), default one row each."""
        params = list(params)
        extras = LogitsExtras(batched_processor=self.batched_processor)
        row_eos = None
        for rows in groups if groups is not None else [[i] for i in range(len(req_ids))]:
            first = rows[0]
            p = params[first]
            state = self._states.get(req_ids[first])
            if state is None:
                continue
            if p.logits_processor or p.apply_batched_logits_processor:
                extras.calls.append(ProcessorCall(rows=list(rows), req_id=user_request_id(req_ids[first]),
                                                  token_ids=[token_ids[r] for r in rows],
                                                  processors=p.logits_processor or (),
                                                  batched=p.apply_batched_logits_processor))
            for r in rows:
                self._row(r, self._states[req_ids[r]], p, token_ids[r], num_prompt_tokens[r], params, extras)
            if state.end_ids is not None:
                if row_eos is None:
                    row_eos = [self.eos_token_ids] * len(params)
                for r in rows:
                    row_eos[r] = state.end_ids
        return StepSampling(params=params, logits_extras=None if extras.is_empty else extras,
                            eos_token_ids=row_eos if row_eos is not None else self.eos_token_ids)

    @staticmethod
    def _row(r: int, state: _FeatureState, p: SamplingParams, tokens: list[int], num_prompt: int,
             params: list[SamplingParams], extras: LogitsExtras) -> None:
        if state.bias is not None:
            extras.bias_rows.append(r)
            extras.biases.append(state.bias)
        bad_words = p.bad_words_token_ids
        banned = bad_word_bans(tokens, bad_words) if bad_words else []
        if state.ngrams is not None:
            banned += state.ngrams.banned(tokens)
        extras.banned_rows += [r] * len(banned)
        extras.banned_cols += banned
        if state.top_p is not None:
            decayed = copy.copy(p)
            decayed.top_p = state.top_p.current(tokens[num_prompt:])
            params[r] = decayed

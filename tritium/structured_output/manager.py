"""Per-request grammar state for the model runner, and the bitmask that enforces it.

Each step: bitmask(rows) fills one int32 bitmask row per sampling request on the host (guided
rows from their matcher, others all-ones), copies it to the logits' device without a sync, and
the sampler masks the logits there; accept() then advances each matcher by its sampled token
(the runner already has the tokens on the host). A request resumed after preemption gets a
fresh matcher that replays its output tokens.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch

from tritium.sampling_params import SamplingParams
from tritium.structured_output.backend import GrammarBackend
from tritium.structured_output.bitmask import bitmask_words

logger = logging.getLogger(__name__)


class StructuredOutputManager:
    def __init__(self, backend: GrammarBackend):
        self.backend = backend
        self._matchers: dict = {}  # req_id -> llguidance LLMatcher

    def add_request(self, req_id: str, params: SamplingParams, output_token_ids: Sequence[int]) -> None:
        if params.guided_decoding is None:
            return
        matcher = self.backend.matcher(params.guided_decoding)
        if output_token_ids:
            matcher.consume_tokens(list(output_token_ids))
        self._matchers[req_id] = matcher

    def remove(self, req_id: str) -> None:
        self._matchers.pop(req_id, None)

    def bitmask(self, req_ids: Sequence[str], device: torch.device) -> Optional[torch.Tensor]:
        """[N, ceil(V/32)] int32 on `device` for these sampling rows, or None when none is guided."""
        if not self._matchers:
            return None
        rows = [(i, self._matchers[r]) for i, r in enumerate(req_ids) if r in self._matchers]
        if not rows:
            return None
        mask = torch.full((len(req_ids), bitmask_words(self.backend.vocab_size)), -1, dtype=torch.int32,
                          pin_memory=device.type == "cuda")  # [N, W], all allowed
        for i, matcher in rows:
            row = mask[i]
            matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
        return mask.to(device, non_blocking=True)

    def accept(self, req_ids: Sequence[str], token_ids: Sequence[int]) -> None:
        for req_id, token in zip(req_ids, token_ids):
            matcher = self._matchers.get(req_id)
            if matcher is not None and not matcher.consume_token(token):
                logger.warning("guided request %s: token %d rejected by its grammar (%s)",
                               req_id, token, matcher.get_error())

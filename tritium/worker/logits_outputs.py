"""What some requests want from the logits besides a sampled token: prompt logprobs, context
logits (every prompt position's logits) and generation logits (the logits each sampled token came
from). The runner asks this helper only when some request in the step wants one of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from tritium.layers.sampler import compute_top_logprobs
from tritium.sampling_params import SamplingParams

if TYPE_CHECKING:
    from tritium.worker.input_batch import CachedRequestState, StepInputs


class LogitsOutputs:
    def __init__(self, device: torch.device):
        self.device = device
        self.prompt_req_ids: set[str] = set()  # want prompt logprobs or context logits
        self.generation_req_ids: set[str] = set()  # want generation logits

    def add(self, req_id: str, params: SamplingParams) -> None:
        if params.prompt_logprobs is not None or params.return_context_logits:
            self.prompt_req_ids.add(req_id)
        if params.return_generation_logits:
            self.generation_req_ids.add(req_id)

    def remove(self, req_id: str) -> None:
        self.prompt_req_ids.discard(req_id)
        self.generation_req_ids.discard(req_id)

    def wants_prompt_outputs(self, scheduled: dict[str, int]) -> bool:
        return bool(self.prompt_req_ids) and not self.prompt_req_ids.isdisjoint(scheduled)

    def prompt_outputs(self, model, states: list["CachedRequestState"], inputs: "StepInputs", hidden: torch.Tensor,
                       prompt_logprobs: dict, context_logits: dict) -> None:
        """For the prompt positions each request computes this step: top-k logprobs of the next
        prompt token (positions 0 .. P-2) and the raw logits (positions 0 .. P-1), the latter as
        float32 host tensors [n, V]."""
        qsl = inputs.query_start_loc.tolist()
        for r, state in enumerate(states):
            if state.req_id not in self.prompt_req_ids:
                continue
            params = state.sampling_params
            start = state.num_computed_tokens
            end = min(start + qsl[r + 1] - qsl[r], state.num_prompt_tokens)  # prompt positions this step
            if end <= start:
                continue
            logits = model.compute_logits(hidden[qsl[r]:qsl[r] + end - start])  # [n, V]
            if params.return_context_logits:
                context_logits[state.req_id] = logits.float().to("cpu")
            k = params.prompt_logprobs
            last = min(end, state.num_prompt_tokens - 1)  # position P-1 predicts no prompt token
            if k is not None and last > start:
                targets = torch.tensor(state.token_ids[start + 1:last + 1], device=self.device)
                prompt_logprobs[state.req_id] = compute_top_logprobs(logits[:last - start], targets, k)

    def generation_logits(self, sampling: list["CachedRequestState"], logits: torch.Tensor,
                          non_blocking: bool) -> Optional[tuple[list[str], torch.Tensor]]:
        """(req ids, float32 host copy [n, V]) of the sampling rows that want their raw logits."""
        rows = [i for i, s in enumerate(sampling) if s.req_id in self.generation_req_ids]
        if not rows:
            return None
        picked = logits[rows].float()  # [n, V]
        host = torch.empty(picked.shape, dtype=torch.float32, pin_memory=picked.is_cuda)
        host.copy_(picked, non_blocking=non_blocking)
        return [sampling[i].req_id for i in rows], host

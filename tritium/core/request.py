"""Request: the engine's view of one sequence. Token ids and counters only, no tensors.

Invariant the scheduler works by:
    all_token_ids = prompt_token_ids + output_token_ids          (len == num_tokens)
    0 <= num_computed_tokens <= num_tokens + num_output_placeholders
Each step hands out up to `num_tokens + num_output_placeholders - num_computed_tokens` tokens;
when computed catches up the model samples one more token, which is appended to
output_token_ids when its step's output arrives (an overlapped engine schedules the next step
before that: the token is a placeholder meanwhile, and the runner feeds it in on the device).
"""
from __future__ import annotations

import enum
import time
from typing import Optional, Union

from tritium.sampling_params import SamplingParams


class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    # Everything from here on is finished.
    FINISHED_STOPPED = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5

    @staticmethod
    def is_finished(status: "RequestStatus") -> bool:
        return status >= RequestStatus.FINISHED_STOPPED


_FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
}


class Request:
    def __init__(self, request_id: str, prompt_token_ids: list[int], sampling_params: SamplingParams,
                 eos_token_ids: tuple[int, ...] = (), arrival_time: Optional[float] = None):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.sampling_params = sampling_params
        # EOS (end_id when given; -1: none) ends the request unless ignore_eos; stop_token_ids always do.
        if sampling_params.end_id is not None:
            eos_token_ids = () if sampling_params.end_id == -1 else (sampling_params.end_id,)
        self.eos_token_ids = frozenset(() if sampling_params.ignore_eos else eos_token_ids)
        self.stop_token_ids = frozenset(sampling_params.stop_token_ids or ())
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.status = RequestStatus.WAITING
        self.output_token_ids: list[int] = []
        self.all_token_ids: list[int] = list(prompt_token_ids)
        self.num_computed_tokens = 0
        # Tokens being sampled by steps still in flight (overlapped engine): scheduled as inputs
        # of the next step before their ids are known here.
        self.num_output_placeholders = 0
        self.num_cached_tokens = -1  # prefix-cache hit at first scheduling; -1 until then
        self.num_preemptions = 0
        # Prompt positions whose logprobs were sent; kept across preemption (a resumed request
        # recomputes its prompt and the runner reports those positions again).
        self.num_prompt_logprobs_sent = 0
        self.num_context_logits_sent = 0  # the same for context logits (return_context_logits)
        self.stop_reason: Union[int, str, None] = None
        # Chained hashes of the request's full blocks, filled in by the KV cache manager.
        self.block_hashes: list[int] = []
        self.beam = None  # the BeamSearch this request is a beam of (core/beam_search.py), if any

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    def length_capped(self, max_model_len: int) -> bool:
        """Whether the tokens in flight already reach max_tokens or max_model_len: the request
        will finish when they arrive, so it must not be scheduled again."""
        n = self.num_output_placeholders
        max_tokens = self.sampling_params.max_tokens
        return n > 0 and (self.num_tokens + n >= max_model_len
                          or (max_tokens is not None and self.num_output_tokens + n >= max_tokens))

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return RequestStatus.is_finished(self.status)

    @property
    def finish_reason(self) -> Optional[str]:
        return _FINISH_REASONS.get(self.status)

    def append_output_token_ids(self, token_ids: Union[int, list[int]]) -> None:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        self.output_token_ids.extend(token_ids)
        self.all_token_ids.extend(token_ids)

    def __repr__(self) -> str:
        return (f"Request({self.request_id!r}, status={self.status.name}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens})")


def check_stop(request: Request, max_model_len: int) -> bool:
    """Token-level stop check after a token was appended; sets status and stop_reason.

    Stop strings need text and are checked in the front (tritium.llm), which aborts.
    """
    params = request.sampling_params
    # min_tokens holds back EOS and stop ids, never max_model_len: there is no room past it.
    if request.num_output_tokens < params.min_tokens and request.num_tokens < max_model_len:
        return False
    last = request.output_token_ids[-1]
    if last in request.eos_token_ids:
        request.status = RequestStatus.FINISHED_STOPPED
        request.stop_reason = None
        return True
    if last in request.stop_token_ids:
        request.status = RequestStatus.FINISHED_STOPPED
        request.stop_reason = last
        return True
    if request.num_tokens >= max_model_len or (
            params.max_tokens is not None and request.num_output_tokens >= params.max_tokens):
        request.status = RequestStatus.FINISHED_LENGTH
        return True
    return False

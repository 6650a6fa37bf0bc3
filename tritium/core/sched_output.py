"""The plain, picklable contract between the scheduler and the model runner, and back."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from tritium.sampling_params import SamplingParams

Tensor = Any  # torch.Tensor: core imports no torch, tensors only pass through it


@dataclass
class NewRequestData:
    """A request the runner has no state for: first scheduling, or resumed after preemption.

    token_ids holds every known token (prompt + outputs so far); the runner computes
    token_ids[num_computed_tokens : num_computed_tokens + num_scheduled_tokens[req_id]].
    """

    req_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    sampling_params: SamplingParams
    block_ids: list[int]
    num_computed_tokens: int
    # A beam of a beam search: how many of its most likely next tokens to report (0: samples).
    num_beam_candidates: int = 0


@dataclass
class CachedRequestData:
    """A request the runner already holds: only what changed since the last step."""

    req_id: str
    new_block_ids: list[int]
    num_computed_tokens: int


@dataclass
class SchedulerOutput:
    scheduled_new_reqs: list[NewRequestData]
    scheduled_cached_reqs: list[CachedRequestData]
    num_scheduled_tokens: dict[str, int]  # req_id -> tokens computed this step
    total_num_scheduled_tokens: int
    # Requests whose runner state must be dropped: finished, aborted or preempted since last step.
    finished_req_ids: set[str] = field(default_factory=set)
    # (source, destination) KV blocks to copy before the step runs (a beam's copy-on-write).
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return self.total_num_scheduled_tokens == 0

    def num_computed_before(self, req_id: str) -> int:
        """The request's num_computed_tokens when this step was scheduled."""
        for r in self.scheduled_new_reqs:
            if r.req_id == req_id:
                return r.num_computed_tokens
        for c in self.scheduled_cached_reqs:
            if c.req_id == req_id:
                return c.num_computed_tokens
        raise KeyError(req_id)


@dataclass
class TopLogprobs:
    """Log-probabilities at one position: index 0 is the chosen token, then the top-k."""

    token_ids: list[int]
    logprobs: list[float]
    ranks: list[int]  # 1-based rank of each token in the full distribution


@dataclass
class BeamCandidates:
    """A beam's most likely next tokens, most likely first, with their log-probabilities."""

    token_ids: list[int]
    logprobs: list[float]


@dataclass
class ModelRunnerOutput:
    # Requests that sampled a token this step (their computed tokens reached num_tokens).
    req_ids: list[str]
    sampled_token_ids: list[int]
    logprobs: list[Optional[TopLogprobs]]  # per sampled request; None unless it asked
    # req_id -> one entry per prompt position computed this step (positions 1.. of the prompt).
    prompt_logprobs: dict[str, list[TopLogprobs]] = field(default_factory=dict)
    # req_id -> float32 host logits [n, V] of the prompt positions computed this step (return_context_logits).
    context_logits: dict[str, Tensor] = field(default_factory=dict)
    # req_id -> float32 host logits [V] its sampled token came from (return_generation_logits).
    generation_logits: dict[str, Tensor] = field(default_factory=dict)
    # Beam search rows (they sample nothing): beam req_id -> its most likely next tokens.
    beam_candidates: dict[str, BeamCandidates] = field(default_factory=dict)

    @property
    def has_extras(self) -> bool:
        """Anything besides sampled tokens and their logprobs."""
        return bool(self.prompt_logprobs or self.context_logits or self.generation_logits)

    @staticmethod
    def empty() -> "ModelRunnerOutput":
        return ModelRunnerOutput(req_ids=[], sampled_token_ids=[], logprobs=[])


@dataclass
class EngineCoreOutput:
    """What one step produced for one request; the front turns these into RequestOutput."""

    req_id: str
    new_token_ids: list[int]
    new_logprobs: list[TopLogprobs] = field(default_factory=list)
    new_prompt_logprobs: list[TopLogprobs] = field(default_factory=list)
    new_context_logits: Optional[Tensor] = None  # [n, V] float32, the prompt positions not sent before
    new_generation_logits: Optional[Tensor] = None  # [len(new_token_ids), V] float32
    finish_reason: Optional[str] = None  # "stop" | "length" | "abort"
    stop_reason: Optional[int] = None
    num_cached_tokens: int = 0
    beam_hypotheses: Optional[list] = None  # beam search, when finished: the n best BeamHypothesis
    beam_step: bool = False  # a beam search took a step (sent when perf metrics are asked for, and at the end)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

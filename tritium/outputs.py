"""What `LLM.generate` returns (TensorRT-LLM / vLLM shapes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

Tensor = Any  # torch.Tensor (importing tritium stays free of torch)


@dataclass
class Logprob:
    """Log-probability of one token; rank 1 is the most likely token."""

    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


# One dict per position: {token_id: Logprob}; it always holds the chosen token, plus the top-k.
PositionLogprobs = dict[int, Logprob]


@dataclass
class RequestPerfMetrics:
    """When one completion's tokens came out of the engine (SamplingParams.return_perf_metrics).

    time.perf_counter() seconds of this process, stamped by the output processor on the engine
    thread as each step's tokens arrive: before detokenizing and before delivery to the caller.
    """

    arrival_time: float  # the request was handed to the LLM front (generate / generate_async)
    token_times: list[float]  # one per generated token

    @property
    def first_token_time(self) -> Optional[float]:
        return self.token_times[0] if self.token_times else None

    @property
    def last_token_time(self) -> Optional[float]:
        return self.token_times[-1] if self.token_times else None


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: Optional[list[PositionLogprobs]] = None
    cumulative_logprob: Optional[float] = None
    finish_reason: Optional[str] = None  # "stop" | "length" | "abort"
    stop_reason: Union[int, str, None] = None  # the stop string or stop token id that ended it
    # Streaming: what this snapshot adds to the previous one (TensorRT-LLM's names).
    text_diff: str = ""
    token_ids_diff: list[int] = field(default_factory=list)
    request_perf_metrics: Optional[RequestPerfMetrics] = None  # on the final output, if asked for
    generation_logits: Optional[Tensor] = None  # [generated tokens, V] float32 (return_generation_logits)

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    prompt_logprobs: Optional[list[Optional[PositionLogprobs]]] = None  # None for the first prompt token
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    context_logits: Optional[Tensor] = None  # [len(prompt_token_ids), V] float32 (return_context_logits)

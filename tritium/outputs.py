"""What `LLM.generate` returns (TensorRT-LLM / vLLM shapes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union


@dataclass
class Logprob:
    """Log-probability of one token; rank 1 is the most likely token."""

    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


# One dict per position: {token_id: Logprob}; it always holds the chosen token, plus the top-k.
PositionLogprobs = dict[int, Logprob]


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

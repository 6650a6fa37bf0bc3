"""User-facing sampling knobs, validated on construction: a bad value raises ValueError naming the field."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from tritium.structured_output.params import GuidedDecodingParams

_GREEDY_EPS = 1e-5


@dataclass
class SamplingParams:
    """How to sample one prompt's completions (TensorRT-LLM / vLLM names).

    temperature=0 (or top_k=1) is greedy. `seed` makes a request reproducible whatever else is
    in the batch. `stop` strings end the text and are left out unless include_stop_str_in_output.
    `logprobs=k` returns the top-k log-probabilities per generated token (plus the sampled one);
    `prompt_logprobs=k` the same for each prompt token after the first.
    `return_perf_metrics` adds arrival and per-token times to the final output (benchmarks).
    `guided_decoding` constrains the output to a JSON schema, regex or grammar.
    """

    max_tokens: Optional[int] = 32  # None: until max_seq_len
    temperature: float = 1.0
    top_k: int = 0  # 0 or -1: off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None
    stop: Union[None, str, list[str]] = None
    stop_token_ids: Optional[list[int]] = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    n: int = 1
    best_of: Optional[int] = None
    logprobs: Optional[int] = None
    prompt_logprobs: Optional[int] = None
    skip_special_tokens: bool = True
    detokenize: bool = True
    return_perf_metrics: bool = False  # per-token timestamps on the final CompletionOutput
    guided_decoding: Optional[GuidedDecodingParams] = None
    _stop_list: list[str] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self):
        self._validate()
        if isinstance(self.stop, str):
            self._stop_list = [self.stop]
        else:
            self._stop_list = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        if self.best_of is None:
            self.best_of = self.n

    # ---- validation -----------------------------------------------------------------------
    def _validate(self) -> None:
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        def fail(name, why):
            raise ValueError(f"SamplingParams.{name} {why}, got {getattr(self, name)!r}")

        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < 1):
            fail("max_tokens", "must be an integer >= 1 (or None)")
        if not is_num(self.temperature) or self.temperature < 0 or self.temperature != self.temperature:
            fail("temperature", "must be a number >= 0")
        if not is_int(self.top_k) or self.top_k < -1:
            fail("top_k", "must be an integer >= 1, or 0 / -1 to disable")
        if not is_num(self.top_p) or not 0.0 < self.top_p <= 1.0:
            fail("top_p", "must be in (0, 1]")
        if not is_num(self.min_p) or not 0.0 <= self.min_p <= 1.0:
            fail("min_p", "must be in [0, 1]")
        if not is_num(self.repetition_penalty) or self.repetition_penalty <= 0:
            fail("repetition_penalty", "must be > 0")
        if not is_num(self.presence_penalty) or not -2.0 <= self.presence_penalty <= 2.0:
            fail("presence_penalty", "must be in [-2, 2]")
        if not is_num(self.frequency_penalty) or not -2.0 <= self.frequency_penalty <= 2.0:
            fail("frequency_penalty", "must be in [-2, 2]")
        if self.seed is not None and not is_int(self.seed):
            fail("seed", "must be an integer or None")
        if self.stop is not None:
            stops = [self.stop] if isinstance(self.stop, str) else self.stop
            if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
                fail("stop", "must be a non-empty string or a list of non-empty strings")
            if stops and not self.detokenize:
                fail("stop", "needs detokenize=True (stop strings are found in the text)")
        if self.stop_token_ids is not None:
            if not isinstance(self.stop_token_ids, (list, tuple)) or not all(
                    is_int(t) and t >= 0 for t in self.stop_token_ids):
                fail("stop_token_ids", "must be a list of non-negative integers")
        if not is_int(self.min_tokens) or self.min_tokens < 0:
            fail("min_tokens", "must be an integer >= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            fail("min_tokens", f"must not exceed max_tokens={self.max_tokens}")
        if not is_int(self.n) or self.n < 1:
            fail("n", "must be an integer >= 1")
        if self.best_of is not None and (not is_int(self.best_of) or self.best_of < self.n):
            fail("best_of", f"must be an integer >= n={self.n}")
        if self.logprobs is not None and (not is_int(self.logprobs) or self.logprobs < 0):
            fail("logprobs", "must be an integer >= 0 (or None)")
        if self.prompt_logprobs is not None and (not is_int(self.prompt_logprobs) or self.prompt_logprobs < 0):
            fail("prompt_logprobs", "must be an integer >= 0 (or None)")
        if self.guided_decoding is not None and not isinstance(self.guided_decoding, GuidedDecodingParams):
            fail("guided_decoding", "must be a GuidedDecodingParams (or None)")

    # ---- derived ----------------------------------------------------------------------------
    @property
    def stop_strings(self) -> list[str]:
        return self._stop_list

    @property
    def is_greedy(self) -> bool:
        return self.temperature < _GREEDY_EPS or self.top_k == 1

    @property
    def needs_penalties(self) -> bool:
        return (self.repetition_penalty != 1.0 or self.presence_penalty != 0.0
                or self.frequency_penalty != 0.0)

    def child(self, index: int) -> "SamplingParams":
        """Params of the index-th of best_of parallel sequences: n=1 and a distinct seed. Only
        child 0 computes prompt logprobs (they are the same for all); with best_of > n every
        child reports its sampled tokens' logprobs, which rank the sequences."""
        import copy

        p = copy.copy(self)
        p.n = 1
        p.best_of = 1
        if self.seed is not None:
            p.seed = self.seed + index
        if index > 0:
            p.prompt_logprobs = None
        if self.best_of > self.n and p.logprobs is None:
            p.logprobs = 0
        return p

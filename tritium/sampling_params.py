"""User-facing sampling knobs, validated on construction: a bad value raises ValueError naming the field."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from tritium.structured_output.params import GuidedDecodingParams

_GREEDY_EPS = 1e-5

# TensorRT-LLM spells "use the default" as None for these; tritium keeps concrete defaults.
_NONE_MEANS_DEFAULT = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
                       "presence_penalty": 0.0, "frequency_penalty": 0.0, "min_tokens": 0}

# Beam search is deterministic: these sampling filters have nothing to act on.
_NOT_WITH_BEAM_SEARCH = ("top_k", "top_p", "min_p", "top_p_min", "top_p_decay", "top_p_reset_ids",
                         "guided_decoding", "stop")
_ONLY_WITH_BEAM_SEARCH = ("length_penalty", "early_stopping", "beam_search_diversity_rate", "beam_width_array")
_MAX_BEAM_WIDTH_ARRAY = 8  # TensorRT-LLM's limit on the number of per-step widths


class LogitsProcessor(ABC):
    """A per-request logits callback (SamplingParams.logits_processor); any callable with this
    signature works too. It modifies `logits` in place: [1, beams, vocab_size] float32 on the
    model's device (beams is 1 unless beam search), before any sampling step; token_ids holds each
    beam's tokens so far (prompt + generated); stream_ptr is the CUDA stream it runs on (None on a
    CPU); req_id is the LLM's request id, client_id is None."""

    @abstractmethod
    def __call__(self, req_id: int, logits, token_ids: list[list[int]], stream_ptr: Optional[int],
                 client_id: Optional[int]) -> None:
        ...


class BatchedLogitsProcessor(ABC):
    """One callback for every request of a step that set apply_batched_logits_processor, given to
    LLM(batched_logits_processor=...): lists of what LogitsProcessor gets, one entry per request."""

    @abstractmethod
    def __call__(self, req_ids: list[int], logits: list, token_ids: list[list[list[int]]],
                 stream_ptr: Optional[int], client_ids: list[Optional[int]]) -> None:
        ...


@dataclass
class SamplingParams:
    """How to sample one prompt's completions (TensorRT-LLM's names and semantics; vLLM's extras).

    temperature=0 (or top_k=1, or top_p=0) is greedy. `seed` makes a request reproducible
    whatever else is in the batch. `stop` strings end the text and are left out unless
    include_stop_str_in_output. `logprobs=k` returns the top-k log-probabilities per generated
    token (plus the sampled one; True means 1); `prompt_logprobs=k` the same for each prompt token
    after the first.

    Beam search: `use_beam_search=True` searches with beam width `best_of` (or `n`) and returns the
    `n` best; `length_penalty` (score = sum of logprobs / generated length ** length_penalty, 0 by
    default), `early_stopping` (1 / True: stop once `beam width` sequences finished; 0 / False:
    stop when no running beam can beat the finished ones at its current length; "never" (or any
    other int): ... at the longest length it could reach), `beam_search_diversity_rate` (adds
    rate * parent beam index to a candidate's ranking), `beam_width_array` (a width per step; the
    last one holds from then on). The engine must be built with max_beam_width >= the width.

    Logits, in this order before sampling: `logits_processor` callables (per request:
    f(req_id, logits [1, beams, V], token_ids [beams][tokens], stream_ptr, client_id), in place),
    the LLM's batched processor when `apply_batched_logits_processor`, `embedding_bias` [V] added,
    penalties, min_tokens, `bad` strings / `bad_token_ids` and `no_repeat_ngram_size` banned.
    `top_p_decay` / `top_p_min` / `top_p_reset_ids`: after each token top_p becomes
    max(top_p * decay, top_p_min), back to top_p when the token is top_p_reset_ids.
    `end_id` replaces the model's end-of-sequence tokens (-1: none); `pad_id` is accepted for
    compatibility (outputs are never padded).

    Output: `return_context_logits` / `return_generation_logits` put float32 logits tensors on the
    output ([prompt tokens, V] and [generated tokens, V]); `exclude_input_from_output=False`
    puts the prompt's tokens and text in front of each completion's. Input: `add_special_tokens`
    (BOS), `truncate_prompt_tokens=k` keeps the prompt's last k tokens. `return_perf_metrics`
    adds arrival and per-token times to the final output (benchmarks). `guided_decoding`
    constrains the output to a JSON schema, regex or grammar (GuidedDecodingParams).
    """

    max_tokens: Optional[int] = 32  # None: until max_seq_len
    temperature: Optional[float] = 1.0
    top_k: Optional[int] = 0  # 0 or -1: off
    top_p: Optional[float] = 1.0
    min_p: Optional[float] = 0.0
    repetition_penalty: Optional[float] = 1.0
    presence_penalty: Optional[float] = 0.0
    frequency_penalty: Optional[float] = 0.0
    seed: Optional[int] = None
    stop: Union[None, str, list[str]] = None
    stop_token_ids: Optional[list[int]] = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: Optional[int] = 0
    n: int = 1
    best_of: Optional[int] = None
    logprobs: Union[None, bool, int] = None
    prompt_logprobs: Union[None, bool, int] = None
    skip_special_tokens: bool = True
    detokenize: bool = True
    # ---- TensorRT-LLM fields ----
    end_id: Optional[int] = None
    pad_id: Optional[int] = None
    bad: Union[None, str, list[str]] = None
    bad_token_ids: Optional[list[int]] = None
    embedding_bias: Any = None  # torch.Tensor [vocab_size]
    logits_processor: Union[None, Callable, list[Callable]] = None
    apply_batched_logits_processor: bool = False
    use_beam_search: bool = False
    top_p_min: Optional[float] = None
    top_p_reset_ids: Optional[int] = None
    top_p_decay: Optional[float] = None
    beam_search_diversity_rate: Optional[float] = None
    length_penalty: Optional[float] = None
    early_stopping: Union[None, bool, int, str] = None
    no_repeat_ngram_size: Optional[int] = None
    beam_width_array: Optional[list[int]] = None
    return_context_logits: bool = False
    return_generation_logits: bool = False
    exclude_input_from_output: bool = True
    return_perf_metrics: bool = False  # per-token timestamps on the final CompletionOutput
    guided_decoding: Optional[GuidedDecodingParams] = None
    add_special_tokens: bool = True
    truncate_prompt_tokens: Optional[int] = None
    spaces_between_special_tokens: Optional[bool] = None  # None: as the tokenizer decodes
    _stop_list: list[str] = field(init=False, repr=False, default_factory=list)
    _bad_word_ids: list[list[int]] = field(init=False, repr=False, default_factory=list)  # `bad`, tokenized

    def __post_init__(self):
        for name, default in _NONE_MEANS_DEFAULT.items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        for name in ("logprobs", "prompt_logprobs"):  # TensorRT-LLM's examples pass True for one
            value = getattr(self, name)
            if value is True:
                setattr(self, name, 1)
            elif value is False:
                setattr(self, name, None)
        self._validate()
        if isinstance(self.stop, str):
            self._stop_list = [self.stop]
        else:
            self._stop_list = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.bad_token_ids = list(self.bad_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        if self.best_of is None:
            self.best_of = self.n
        if self.pad_id is None:
            self.pad_id = self.end_id
        if callable(self.logits_processor):
            self.logits_processor = [self.logits_processor]

    # ---- validation -----------------------------------------------------------------------
    def _validate(self) -> None:
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v

        def fail(name, why):
            raise ValueError(f"SamplingParams.{name} {why}, got {getattr(self, name)!r}")

        def int_list(name):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (list, tuple))
                                      or not all(is_int(t) and t >= 0 for t in value)):
                fail(name, "must be a list of non-negative integers")

        def string_list(name):
            value = getattr(self, name)
            if value is not None:
                items = [value] if isinstance(value, str) else value
                if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) and s for s in items):
                    fail(name, "must be a non-empty string or a list of non-empty strings")

        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < 1):
            fail("max_tokens", "must be an integer >= 1 (or None)")
        if not is_num(self.temperature) or self.temperature < 0:
            fail("temperature", "must be a number >= 0")
        if not is_int(self.top_k) or self.top_k < -1:
            fail("top_k", "must be an integer >= 1, or 0 / -1 to disable")
        if not is_num(self.top_p) or not 0.0 <= self.top_p <= 1.0:
            fail("top_p", "must be in [0, 1] (0: greedy)")
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
        string_list("stop")
        if self.stop and not self.detokenize:
            fail("stop", "needs detokenize=True (stop strings are found in the text)")
        if self.stop_token_ids is not None and not isinstance(self.stop_token_ids, (list, tuple)):
            fail("stop_token_ids", "must be a list of non-negative integers")
        int_list("stop_token_ids")
        if not is_int(self.min_tokens) or self.min_tokens < 0:
            fail("min_tokens", "must be an integer >= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            fail("min_tokens", f"must not exceed max_tokens={self.max_tokens}")
        if not is_int(self.n) or self.n < 1:
            fail("n", "must be an integer >= 1")
        if self.best_of is not None and (not is_int(self.best_of) or self.best_of < self.n):
            fail("best_of", f"must be an integer >= n={self.n}")
        if self.logprobs is not None and (not is_int(self.logprobs) or self.logprobs < 0):
            fail("logprobs", "must be an integer >= 0, True (one), or None")
        if self.prompt_logprobs is not None and (not is_int(self.prompt_logprobs) or self.prompt_logprobs < 0):
            fail("prompt_logprobs", "must be an integer >= 0, True (one), or None")
        if self.guided_decoding is not None and not isinstance(self.guided_decoding, GuidedDecodingParams):
            fail("guided_decoding", "must be a GuidedDecodingParams (or None)")
        self._validate_trtllm_fields(is_int, is_num, fail, int_list, string_list)

    def _validate_trtllm_fields(self, is_int, is_num, fail, int_list, string_list) -> None:
        if self.end_id is not None and (not is_int(self.end_id) or self.end_id < -1):
            fail("end_id", "must be a token id, or -1 for no end token")
        if self.pad_id is not None and (not is_int(self.pad_id) or self.pad_id < 0):
            fail("pad_id", "must be a non-negative token id")
        string_list("bad")
        int_list("bad_token_ids")
        if self.embedding_bias is not None:
            import torch

            bias = self.embedding_bias
            if not isinstance(bias, torch.Tensor) or bias.dim() != 1 or not bias.is_floating_point():
                fail("embedding_bias", "must be a 1-D floating-point torch.Tensor of vocab_size values")
        processors = self.logits_processor
        if processors is not None and not callable(processors) and not (
                isinstance(processors, (list, tuple)) and all(callable(p) for p in processors)):
            fail("logits_processor", "must be a callable or a list of callables")
        for name in ("top_p_min", "top_p_decay"):
            value = getattr(self, name)
            if value is not None and (not is_num(value) or not 0.0 < value <= 1.0):
                fail(name, "must be in (0, 1]")
        if self.top_p_reset_ids is not None and (not is_int(self.top_p_reset_ids) or self.top_p_reset_ids < 0):
            fail("top_p_reset_ids", "must be a token id")
        if self.no_repeat_ngram_size is not None and (not is_int(self.no_repeat_ngram_size)
                                                      or self.no_repeat_ngram_size < 1):
            fail("no_repeat_ngram_size", "must be an integer >= 1")
        if self.truncate_prompt_tokens is not None and (not is_int(self.truncate_prompt_tokens)
                                                        or self.truncate_prompt_tokens < 1):
            fail("truncate_prompt_tokens", "must be an integer >= 1")
        if self.length_penalty is not None and not is_num(self.length_penalty):
            fail("length_penalty", "must be a number")
        if self.beam_search_diversity_rate is not None and (not is_num(self.beam_search_diversity_rate)
                                                            or self.beam_search_diversity_rate < 0):
            fail("beam_search_diversity_rate", "must be a number >= 0")
        if self.early_stopping is not None and not (isinstance(self.early_stopping, (bool, int))
                                                    or self.early_stopping == "never"):
            fail("early_stopping", "must be True / 1, False / 0, or 'never'")
        if self.beam_width_array is not None:
            widths = self.beam_width_array
            if (not isinstance(widths, (list, tuple)) or not 0 < len(widths) <= _MAX_BEAM_WIDTH_ARRAY
                    or not all(is_int(w) and w >= 1 for w in widths)):
                fail("beam_width_array", f"must be a list of 1 to {_MAX_BEAM_WIDTH_ARRAY} integers >= 1")
            if widths[-1] < self.n:
                fail("beam_width_array", f"must end with a width >= n={self.n} (the sequences returned)")
        if self.use_beam_search:
            for name in _NOT_WITH_BEAM_SEARCH:
                if self._is_set(name):
                    fail(name, "cannot be honoured with use_beam_search=True (beam search does not sample)")
        else:
            for name in _ONLY_WITH_BEAM_SEARCH:
                if getattr(self, name) is not None:
                    fail(name, "only applies to beam search (use_beam_search=True)")

    def _is_set(self, name: str) -> bool:
        value = getattr(self, name, None)
        if name == "top_k":
            return value not in (0, -1)
        if name == "top_p":
            return value != 1.0
        if name == "min_p":
            return value != 0.0
        return bool(value) if name == "stop" else value is not None

    # ---- derived ----------------------------------------------------------------------------
    @property
    def stop_strings(self) -> list[str]:
        return self._stop_list

    @property
    def bad_strings(self) -> list[str]:
        return [self.bad] if isinstance(self.bad, str) else list(self.bad or [])

    def setup_bad_words(self, tokenizer) -> None:
        """Tokenize `bad` (the front does, before the request reaches the engine)."""
        self._bad_word_ids = [tokenizer.encode(s, add_special_tokens=False) for s in self.bad_strings]

    @property
    def bad_words_token_ids(self) -> list[list[int]]:
        """Every banned token sequence: bad_token_ids (one token each), then the `bad` strings'."""
        return [[t] for t in self.bad_token_ids] + [w for w in self._bad_word_ids if w]

    @property
    def is_greedy(self) -> bool:
        return self.temperature < _GREEDY_EPS or self.top_k == 1 or self.top_p == 0.0

    @property
    def needs_penalties(self) -> bool:
        return (self.repetition_penalty != 1.0 or self.presence_penalty != 0.0
                or self.frequency_penalty != 0.0)

    @property
    def beam_width(self) -> int:
        """Beams searched (beam search only): best_of, or the widest of beam_width_array."""
        return max(self.beam_width_array) if self.beam_width_array else self.best_of

    @property
    def decays_top_p(self) -> bool:
        return self.top_p_decay is not None and not self.is_greedy

    @property
    def needs_host_tokens(self) -> bool:
        """Whether the request's previous tokens must be on the host before each step (no
        overlapped scheduling): penalties, processors, n-gram / bad-word bans, beams, top_p decay,
        a grammar (its matcher must see each token before it masks the next)."""
        return (self.needs_penalties or self.use_beam_search or bool(self.logits_processor)
                or self.guided_decoding is not None
                or self.apply_batched_logits_processor or self.no_repeat_ngram_size is not None
                or bool(self.bad or self._bad_word_ids) or self.decays_top_p)

    def child(self, index: int) -> "SamplingParams":
        """Params of the index-th of best_of parallel sequences: n=1 and a distinct seed. Only
        child 0 computes prompt logprobs and context logits (they are the same for all); with
        best_of > n every child reports its sampled tokens' logprobs, which rank the sequences."""
        import copy

        p = copy.copy(self)
        p.n = 1
        p.best_of = 1
        if self.seed is not None:
            p.seed = self.seed + index
        if index > 0:
            p.prompt_logprobs = None
            p.return_context_logits = False
        if self.best_of > self.n and p.logprobs is None:
            p.logprobs = 0
        return p

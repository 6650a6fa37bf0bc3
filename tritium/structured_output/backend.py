"""The grammar library behind guided decoding: llguidance (a Rust wheel with no Python
dependencies; its matchers compute a token bitmask per step on the host in microseconds).

GrammarBackend is shared by the front (validate: a bad schema is a ValueError before the
request reaches the engine) and the model runner (one matcher per guided request).
"""
from __future__ import annotations

import threading
from typing import Optional, Sequence

from tritium.structured_output.params import GuidedDecodingParams


def _llguidance():
    """Imported on first use: an engine that never guides runs without the library installed."""
    try:
        import llguidance
        import llguidance.hf
    except ImportError as e:
        raise ValueError(f"guided decoding needs llguidance (pip install llguidance): {e}") from None
    return llguidance

# Compact JSON (", " and ": " separators, no free whitespace): a small model left to place its own
# whitespace tends to wander in newlines instead of closing the object.
_JSON_OPTIONS = {"whitespace_flexible": False}


class GrammarBackend:
    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: Sequence[int]):
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size  # the model's logits width (may exceed the tokenizer's)
        self._eos = list(eos_token_ids) or None
        self._ll_tokenizer = None
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, tokenizer, model_config) -> Optional["GrammarBackend"]:
        """The backend of a model's tokenizer; None without one (no guided decoding then)."""
        return cls(tokenizer, model_config.vocab_size, model_config.eos_token_ids) if tokenizer is not None else None

    @property
    def ll_tokenizer(self):
        """llguidance's LLTokenizer, built on first use (about 0.3 s for a 49k vocabulary), then shared."""
        with self._lock:
            if self._ll_tokenizer is None:
                self._ll_tokenizer = _llguidance().hf.from_tokenizer(
                    self._hf_tokenizer, n_vocab=self.vocab_size, eos_token=self._eos)
            return self._ll_tokenizer

    @staticmethod
    def grammar_of(params: GuidedDecodingParams) -> str:
        """llguidance's grammar text for these params (not yet validated)."""
        llguidance = _llguidance()
        schema = params.schema_text()
        if schema is not None:
            try:
                return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)
            except ValueError as e:
                raise ValueError(f"guided decoding: the JSON schema is not valid JSON: {e}") from None
        if params.regex is not None:
            return llguidance.LLMatcher.grammar_from_regex(params.regex)
        fmt = "gbnf" if "::=" in params.grammar else "lark"
        try:
            return llguidance.grammar_from(fmt, params.grammar)
        except Exception as e:  # noqa: BLE001 - the converter raises plain exceptions on syntax errors
            raise ValueError(f"guided decoding: the grammar does not parse: {e}") from None

    def validate(self, params: GuidedDecodingParams) -> None:
        """Raise ValueError naming the problem if this grammar cannot be enforced."""
        is_error, messages = _llguidance().LLMatcher.validate_grammar_with_warnings(
            self.grammar_of(params), self.ll_tokenizer)
        if is_error:
            raise ValueError(f"guided decoding ({params.kind}): {messages[0]}")

    def matcher(self, params: GuidedDecodingParams):
        """A fresh llguidance LLMatcher for one request."""
        return _llguidance().LLMatcher(self.ll_tokenizer, self.grammar_of(params), log_level=0)

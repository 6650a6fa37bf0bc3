"""IncrementalDetokenizer: token ids in, newly stable text out (vLLM / HF TextStreamer style).

Two offsets into all_ids = prompt tail + outputs:

    all_ids:  [ ... context ... | ... emitted ... | pending ... ]
                                ^prefix_offset    ^read_offset

Each push decodes all_ids[prefix_offset:] and all_ids[prefix_offset:read_offset] and emits what
the longer one adds. Decoding from a few tokens back (not token by token) is what makes
SentencePiece / byte-level BPE spaces and merges come out as a full decode would. Text ending in
U+FFFD is an incomplete UTF-8 character (its bytes span tokens): it is held back, offsets unmoved,
until a later token completes it, or until flush() at the end.
"""
from __future__ import annotations

from collections.abc import Sequence

# Prompt tokens decoded as context in front of the first output token.
_PROMPT_CONTEXT_TOKENS = 5
_REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_token_ids: Sequence[int], skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        context = list(prompt_token_ids[-_PROMPT_CONTEXT_TOKENS:])
        self._ids: list[int] = context  # context + all output ids
        self._num_context = len(context)
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._chunks: list[str] = []

    @property
    def text(self) -> str:
        """All output text emitted so far (held-back bytes excluded until completed or flushed)."""
        return "".join(self._chunks)

    @property
    def output_token_ids(self) -> list[int]:
        return self._ids[self._num_context:]

    def push(self, new_token_ids: Sequence[int]) -> str:
        """Add generated ids; return the text they make stable (maybe "")."""
        self._ids.extend(new_token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """At the end of the sequence: emit whatever is held back, incomplete characters included."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        if len(new_text) <= len(prefix_text) or (new_text.endswith(_REPLACEMENT_CHAR) and not final):
            # Nothing new yet (special tokens skipped, or bytes of a character still to come).
            return ""
        delta = new_text[len(prefix_text):]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        self._chunks.append(delta)
        return delta

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)

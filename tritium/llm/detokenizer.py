"""IncrementalDetokenizer: token ids in, newly stable text out (vLLM / HF TextStreamer style).

Two offsets into all_ids = prompt tail + outputs:

    all_ids:  [ ... context ... | ... emitted ... | pending ... ]
                                ^prefix_offset    ^read_offset

Each push decodes all_ids[prefix_offset:] and all_ids[prefix_offset:read_offset] and emits what
the longer one adds. Decoding from a few tokens back (not token by token) is what makes
SentencePiece / byte-level BPE spaces and merges come out as a full decode would. Text ending in
U+FFFD is an incomplete UTF-8 character (its bytes span tokens): the trailing U+FFFD run is held
back, offsets unmoved, until a later token completes it, or until flush() at the end.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

# Prompt tokens decoded as context in front of the first output token.
_PROMPT_CONTEXT_TOKENS = 5
_REPLACEMENT_CHAR = "\ufffd"
_LOOK_UP = object()  # IncrementalDetokenizer's fast_decoder default: find it from the tokenizer


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_token_ids: Sequence[int],
                 skip_special_tokens: bool = True, spaces_between_special_tokens: Optional[bool] = None,
                 fast_decoder=_LOOK_UP):
        """fast_decoder: rust_decoder(tokenizer), when the caller looked it up already."""
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # None: as the tokenizer decodes (fast tokenizers put no spaces around added tokens).
        self._spaces_between_special_tokens = spaces_between_special_tokens
        self._added_tokens = (tokenizer.added_tokens_decoder  # {id: AddedToken}; built per call: keep it
                              if spaces_between_special_tokens is not None and not skip_special_tokens else None)
        self._backend = rust_decoder(tokenizer) if fast_decoder is _LOOK_UP else fast_decoder
        context = list(prompt_token_ids[-_PROMPT_CONTEXT_TOKENS:])
        self._ids: list[int] = context  # context + all output ids
        self._num_context = len(context)
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._num_partial = 0  # chars past decode(ids[prefix:read]) emitted while held back
        # All output text emitted so far (held-back bytes excluded until completed or flushed).
        self.text = ""

    @property
    def output_token_ids(self) -> list[int]:
        return self._ids[self._num_context:]

    def push(self, new_token_ids: Sequence[int]) -> str:
        """Add generated ids; return the text they make stable (maybe "")."""
        self._ids.extend(new_token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """At the end of the sequence: emit what is held back, incomplete characters included."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        complete = final or not new_text.endswith(_REPLACEMENT_CHAR)
        # Complete characters before an unfinished one are already final (UTF-8 self-syncs).
        stable = new_text if complete else new_text.rstrip(_REPLACEMENT_CHAR)
        delta = stable[len(prefix_text) + self._num_partial:]
        if complete and len(new_text) > len(prefix_text):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            self._num_partial = 0
        else:
            # Offsets stay (no new text yet: skipped special tokens, or a character's bytes
            # still to come); remember what of this window was already emitted.
            self._num_partial += len(delta)
        self.text += delta
        return delta

    def _decode(self, ids: list[int]) -> str:
        if self._spaces_between_special_tokens is None or self._skip_special_tokens:
            if self._backend is not None:
                return self._backend.decode(ids, skip_special_tokens=self._skip_special_tokens)
            return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)
        return decode_spacing_added_tokens(self._tokenizer, self._added_tokens, ids,
                                           self._spaces_between_special_tokens)


def rust_decoder(tokenizer):
    """The `tokenizers.Tokenizer` behind a fast Hugging Face tokenizer when decoding through it
    gives exactly what tokenizer.decode() gives (the stock fast-tokenizer _decode, no clean-up of
    spaces), else None. Decoding runs twice per streamed token; skipping the Python wrapper took
    the output processor from 13.3 to 8.4 us per token in a microbenchmark (BENCHMARKS.md)."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (backend is None or type(tokenizer)._decode is not PreTrainedTokenizerFast._decode
            or getattr(tokenizer, "clean_up_tokenization_spaces", True)):
        return None
    return backend


def decode_spacing_added_tokens(tokenizer, added: dict, ids: Sequence[int], spaces: bool) -> str:
    """Decode with added (special) tokens as separate pieces, joined by a space when `spaces`: what
    transformers' slow tokenizers did for spaces_between_special_tokens (fast ones ignore it)."""
    pieces, run = [], []
    for token in ids:
        if token in added:
            if run:
                pieces.append(tokenizer.decode(run))
                run = []
            pieces.append(added[token].content)
        else:
            run.append(token)
    if run:
        pieces.append(tokenizer.decode(run))
    return (" " if spaces else "").join(pieces)

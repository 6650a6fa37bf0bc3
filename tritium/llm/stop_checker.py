"""StopStringChecker: find stop strings in streamed text, across token boundaries.

A stop string can only newly appear if it ends inside the text added by the last push, so
each check searches just the tail that could hold such a match: the new text plus up to
len(stop) - 1 characters before it. Streaming holds back the last max_stop_len - 1 characters
while the text is not final: they could be the start of a stop string still being generated.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Optional


class StopStringChecker:
    def __init__(self, stop_strings: Iterable[str], include_stop_str_in_output: bool = False):
        self.stop_strings = list(dict.fromkeys(stop_strings))  # de-duplicated, order kept
        if not all(isinstance(s, str) and s for s in self.stop_strings):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop_strings!r}")
        self.include_stop_str_in_output = include_stop_str_in_output
        self.max_stop_len = max((len(s) for s in self.stop_strings), default=0)
        # Characters a stream must not emit yet: they may begin a stop string.
        self.hold_back_len = max(self.max_stop_len - 1, 0)

    def check(self, text: str, new_text_len: int) -> tuple[Optional[str], str]:
        """text: the whole output so far; new_text_len: how many of its last chars are new.

        Returns (stop string, text cut before it, or after it if include_stop_str_in_output),
        or (None, text). The earliest match wins; at equal starts, the one that ends first.
        """
        if new_text_len <= 0 or not self.stop_strings:
            return None, text
        best: Optional[tuple[int, int, str]] = None  # (start, length, stop)
        for stop in self.stop_strings:
            # Earliest start whose match still ends inside the new text.
            lo = max(len(text) - new_text_len - len(stop) + 1, 0)
            start = text.find(stop, lo)
            if start != -1 and (best is None or (start, len(stop)) < best[:2]):
                best = (start, len(stop), stop)
        if best is None:
            return None, text
        start, length, stop = best
        end = start + length if self.include_stop_str_in_output else start
        return stop, text[:end]

    def streamable_len(self, text_len: int, final: bool) -> int:
        """How many leading chars of a text of text_len chars a stream may emit now."""
        return text_len if final else max(text_len - self.hold_back_len, 0)

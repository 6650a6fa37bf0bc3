"""Parsers of the tool calls that model families write as text, for tool_choice "auto"
(`tritium serve --tool-call-parser NAME`, vLLM's flag and names):

  hermes       Qwen2.5 / Qwen3 / Hermes: <tool_call>{"name": ..., "arguments": {...}}</tool_call>, one
               block per call, text before the first block is the message content
  llama3_json  Llama 3.1 / 3.2: {"name": ..., "parameters": {...}} (after <|python_tag|> or alone),
               several joined by ";"
  mistral      Mistral: [TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]

A reply that does not hold well-formed calls is plain content: nothing is half-parsed.
"""
from __future__ import annotations

import json
import re
from typing import Any, Optional

Call = tuple[str, Any]  # (function name, arguments as a JSON value)


class ToolParser:
    # Text that opens a tool call: a stream holds content back from the first marker on.
    markers: tuple[str, ...] = ()
    # The marker is a special token: the reply is detokenized with special tokens kept.
    keeps_special_tokens = False

    def extract(self, text: str) -> tuple[Optional[str], list[Call]]:
        """(content, calls); calls empty when the text holds none (then content is the text)."""
        raise NotImplementedError

    def call_start(self, text: str, start: int = 0) -> Optional[int]:
        """Where the first tool call starts in text (at or after `start`), or None."""
        found = [i for i in (text.find(m, start) for m in self.markers) if i >= 0]
        return min(found) if found else None

    def held_back(self, text: str) -> int:
        """How many trailing characters could be the start of a marker (not yet content)."""
        for n in range(min(len(text), max(map(len, self.markers))), 0, -1):
            if any(m.startswith(text[-n:]) for m in self.markers):
                return n
        return 0


def _call(obj: Any, args_key: str) -> Optional[Call]:
    if isinstance(obj, dict) and isinstance(obj.get("name"), str) and args_key in obj:
        return obj["name"], obj[args_key]
    return None


class HermesParser(ToolParser):
    markers = ("<tool_call>",)
    _block = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)

    def extract(self, text):
        start = self.call_start(text)
        if start is None:
            return text, []
        calls = []
        for body in self._block.findall(text[start:]):
            try:
                call = _call(json.loads(body), "arguments")
            except json.JSONDecodeError:
                call = None
            if call is None:
                return text, []
            calls.append(call)
        if not calls:
            return text, []
        content = text[:start].strip()
        return content or None, calls


class Llama3JsonParser(ToolParser):
    # A call is the whole reply: call_start and held_back look at its beginning, not for markers.
    def extract(self, text):
        body = text.strip()
        if body.startswith("<|python_tag|>"):
            body = body[len("<|python_tag|>"):].strip()
        if not body.startswith("{"):
            return text, []
        decoder, calls, pos = json.JSONDecoder(), [], 0
        while pos < len(body):
            try:
                obj, end = decoder.raw_decode(body, pos)
            except json.JSONDecodeError:
                return text, []
            call = _call(obj, "parameters") or _call(obj, "arguments")
            if call is None:
                return text, []
            calls.append(call)
            pos = end
            while pos < len(body) and body[pos] in " \n\t;":
                pos += 1
        return None, calls

    def call_start(self, text, start=0):
        if start == 0 and text.lstrip().startswith(("<|python_tag|>", "{")):  # blanks before it included
            return 0
        return None

    def held_back(self, text):
        return len(text) if not text.strip() or "<|python_tag|>".startswith(text.lstrip()) else 0


class MistralParser(ToolParser):
    markers = ("[TOOL_CALLS]",)
    keeps_special_tokens = True  # [TOOL_CALLS] is one of Mistral's control tokens

    def extract(self, text):
        start = self.call_start(text)
        if start is None:
            return text, []
        try:
            value = json.loads(text[start + len("[TOOL_CALLS]"):].strip())
        except json.JSONDecodeError:
            return text, []
        calls = [_call(obj, "arguments") for obj in (value if isinstance(value, list) else [value])]
        if not calls or any(c is None for c in calls):
            return text, []
        return text[:start].strip() or None, calls


PARSERS: dict[str, ToolParser] = {"hermes": HermesParser(), "llama3_json": Llama3JsonParser(),
                                  "mistral": MistralParser()}

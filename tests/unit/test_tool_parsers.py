"""The model families' tool-call text (the formats their chat templates teach them: Qwen2.5 /
Hermes <tool_call> blocks, Llama 3.1 JSON, Mistral [TOOL_CALLS]) read into calls, plain replies
left as content; and the streaming of tool_choice "auto" (content up to a call, never a marker)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tritium.entrypoints.openai.serving_chat import ChoiceStream, OpenAIServingChat
from tritium.entrypoints.openai.tool_calls import plan_tools
from tritium.entrypoints.openai.tool_parsers import PARSERS

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]

HERMES = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
          '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>')


@pytest.mark.parametrize("parser, text, content, calls", [
    ("hermes", HERMES, "Let me check.", [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]),
    ("hermes", '<tool_call>{"name": "f", "arguments": {}}</tool_call>', None, [("f", {})]),
    ("hermes", "Paris is sunny today.", "Paris is sunny today.", []),
    ("hermes", '<tool_call>{"name": "f", "arguments": </tool_call>',
     '<tool_call>{"name": "f", "arguments": </tool_call>', []),  # broken: all content
    ("llama3_json", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', None,
     [("get_weather", {"city": "Paris"})]),
    ("llama3_json", '{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}}', None,
     [("a", {"x": 1}), ("b", {})]),
    ("llama3_json", '{"temperature": 21}', '{"temperature": 21}', []),  # JSON, but not a call
    ("llama3_json", "It is sunny.", "It is sunny.", []),
    ("mistral", '[TOOL_CALLS] [{"name": "f", "arguments": {"a": "b"}}]', None, [("f", {"a": "b"})]),
    ("mistral", "No tools needed.", "No tools needed.", []),
])
def test_extract(parser, text, content, calls):
    assert PARSERS[parser].extract(text) == (content, calls)


def _stream(parser: str, pieces: list[str]):
    """Feed cumulative text as the engine delivers it; collect what the client receives."""
    plan = plan_tools(TOOLS, "auto", parser)
    chat, stream, text, received = object.__new__(OpenAIServingChat), ChoiceStream(), "", []
    for i, piece in enumerate(pieces):
        text += piece
        last = i == len(pieces) - 1
        c = SimpleNamespace(index=0, text=text, finished=last, finish_reason="stop" if last else None,
                            stop_reason=None)
        received += chat._auto_chunks(c, plan, stream)
    content = "".join(ch.delta.content or "" for ch in received)
    calls = [(d.function.name, json.loads(d.function.arguments)) for ch in received for d in ch.delta.tool_calls or []]
    return content, calls, received[-1].finish_reason


def test_streamed_auto_sends_content_then_whole_calls():
    pieces = ["Let me ", "check.\n<tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": ",
              "\"Paris\"}}\n</tool_call>"]
    content, calls, finish = _stream("hermes", pieces)
    assert content == "Let me check.\n" and "<" not in content  # the marker's start was held back, never sent
    assert calls == [("get_weather", {"city": "Paris"})] and finish == "tool_calls"


def test_streamed_auto_plain_reply_is_all_content():
    content, calls, finish = _stream("hermes", ["Paris is ", "sunny <b>today</b>", "."])
    assert content == "Paris is sunny <b>today</b>." and calls == [] and finish == "stop"
    content, calls, finish = _stream("llama3_json", ["  ", "{\"name\": \"get_weather\", ", "\"parameters\": {}}"])
    assert content == "" and calls == [("get_weather", {})] and finish == "tool_calls"
    content, calls, finish = _stream("llama3_json", ["{\"x\"", ": 1}"])  # JSON that is no call: sent at the end
    assert content == '{"x": 1}' and calls == [] and finish == "stop"


def test_auto_with_parallel_tool_calls_false_keeps_the_first_call():
    from tritium.entrypoints.openai.tool_calls import parse_reply

    content, calls = parse_reply(plan_tools(TOOLS, "auto", "hermes", parallel=False), HERMES)
    assert content == "Let me check." and [c.function.name for c in calls] == ["get_weather"]

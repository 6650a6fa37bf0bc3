"""Tool calls for /v1/chat/completions, enforced by guided decoding (the model writes JSON that the
grammar allows, and the server turns it into OpenAI `tool_calls`):

- `tool_choice: {"type": "function", "function": {"name": F}}`: the reply is F's arguments, a JSON
  value of F's `parameters` schema; one call, finish_reason "stop" (as OpenAI answers a forced call);
- `tool_choice: "required"`: the reply is a JSON array of one or more {"name", "parameters"} objects,
  each a declared tool with its own schema; finish_reason "tool_calls";
- `tool_choice: "none"`: the tools are left out and the reply is text;
- `tool_choice: "auto"` (OpenAI's default once `tools` are given): the model writes whatever it
  likes, and the server's `--tool-call-parser` (tool_parsers.py) reads its family's own tool-call
  text; without one, a 400 that says what works.

The tools are handed to the chat template (`tools=`), as Hugging Face templates take them.
Streaming: a named function's arguments go out in pieces as they are generated (as OpenAI streams
them); "required" and "auto" calls go out whole once complete.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from tritium.entrypoints.openai.errors import bad_request
from tritium.entrypoints.openai.protocol import FunctionCall, ToolCall, random_id
from tritium.entrypoints.openai.tool_parsers import PARSERS, ToolParser


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools and tool_choice come to."""

    mode: str  # "none" | "named" | "required" | "auto"
    tools: Optional[list[dict[str, Any]]]  # for the chat template (None: render without tools)
    schema: Optional[dict[str, Any]] = None  # the JSON schema the reply must follow
    name: Optional[str] = None  # the named function
    parser: Optional[ToolParser] = None  # "auto": reads the model's own tool-call text
    parallel: bool = True  # "auto" with parallel_tool_calls=False keeps the first call


def _declared(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> parameters schema of each declared function tool (400 naming a malformed one)."""
    out = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise bad_request('each tool must be {"type": "function", "function": {"name": ..., "parameters": ...}}',
                              f"tools.{i}")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("a function tool needs a name", f"tools.{i}.function.name")
        if name in out:
            raise bad_request(f"tool {name!r} is declared twice", f"tools.{i}.function.name")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, dict):
            raise bad_request("parameters must be a JSON schema object", f"tools.{i}.function.parameters")
        out[name] = params
    return out


def plan_tools(tools: Optional[list[dict[str, Any]]], tool_choice: Any, parser: Optional[str] = None,
               parallel: bool = True) -> ToolPlan:
    """parser: the server's --tool-call-parser (a PARSERS name), which tool_choice "auto" needs;
    parallel: OpenAI's parallel_tool_calls (False: one call at most)."""
    if not tools:
        if tool_choice not in (None, "none"):
            raise bad_request("tool_choice needs tools", "tool_choice")
        return ToolPlan("none", None)
    declared = _declared(tools)
    if tool_choice == "none":
        return ToolPlan("none", None)
    if tool_choice in (None, "auto"):
        if parser is not None:
            return ToolPlan("auto", tools, parser=PARSERS[parser], parallel=parallel)
        raise bad_request('tool_choice "auto" (the default with tools) needs a parser of the model\'s own '
                          "tool-call text: start the server with --tool-call-parser "
                          f"({', '.join(PARSERS)}), or use tool_choice \"required\" or "
                          '{"type": "function", "function": {"name": ...}}: their calls are enforced by '
                          "guided decoding", "tool_choice")
    if tool_choice == "required":
        variants = [{"type": "object", "properties": {"name": {"const": name}, "parameters": params},
                     "required": ["name", "parameters"], "additionalProperties": False}
                    for name, params in declared.items()]
        schema = {"type": "array", "minItems": 1, "items": {"anyOf": variants}, **({} if parallel else {"maxItems": 1})}
        return ToolPlan("required", tools, schema)
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if tool_choice.get("type") != "function" or not isinstance(name, str):
            raise bad_request('a named tool_choice is {"type": "function", "function": {"name": ...}}', "tool_choice")
        if name not in declared:
            raise bad_request(f"tool_choice names {name!r}, which is not among the tools "
                              f"({', '.join(declared)})", "tool_choice")
        return ToolPlan("named", tools, declared[name], name)
    raise bad_request(f'tool_choice must be "none", "auto", "required" or a named function, got {tool_choice!r}',
                      "tool_choice")


def parse_reply(plan: ToolPlan, text: str) -> tuple[Optional[str], Optional[list[ToolCall]]]:
    """(content, calls) of a finished reply; calls None when it holds none (then content is the
    text: a guided reply cut short by max_tokens or a stop, or an "auto" reply of plain text)."""
    if plan.mode == "auto":
        content, calls = plan.parser.extract(text)
        if not calls:
            return text, None
        calls = calls if plan.parallel else calls[:1]
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text, None
        content = None
        calls = [(plan.name, value)] if plan.mode == "named" else [(c["name"], c["parameters"]) for c in value]
    return content, [ToolCall(id=random_id("call"), function=FunctionCall(name=name, arguments=json.dumps(args)))
                     for name, args in calls]


def tool_reply(plan: ToolPlan, text: str, engine_reason: Optional[str]):
    """(content, calls, finish_reason) of a finished tool-calling reply: "tool_calls" when it holds
    calls and ended by itself, except for a forced function ("stop", as OpenAI answers one); the
    engine's own reason when it holds none or was cut short ("length", "abort")."""
    content, calls = parse_reply(plan, text)
    reason = "tool_calls" if calls and engine_reason == "stop" and plan.mode != "named" else engine_reason
    return content, calls, reason


def template_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message as chat templates take it: an assistant's tool_calls with their arguments as
    objects (the API carries them as JSON strings; Hugging Face templates iterate them)."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    converted = []
    for call in calls:
        if not isinstance(call.get("function"), dict):
            converted.append(call)  # as sent: the template decides what it can render
            continue
        fn = dict(call["function"])
        if isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = json.loads(fn["arguments"])
            except json.JSONDecodeError:
                pass  # a template gets the string as it was sent
        converted.append({**call, "function": fn})
    return {**message, "tool_calls": converted}

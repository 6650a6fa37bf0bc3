"""Tool calls through the official openai client against the real server (the embedded SmolLM2):
a named function or "required" makes the reply follow the tools' schemas (guided decoding), and
the server hands it back as OpenAI `tool_calls`, whole or streamed; a conversation carrying earlier
calls and tool results renders. Error cases are in test_openai_server.py's table."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.server.conftest import MODEL_NAME

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 20}},
        "required": ["timezone"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Time in a timezone",
                                           "parameters": TIME}}]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _check_calls(calls, allowed=("get_weather", "get_time")):
    assert calls, "no tool calls"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call-") and call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert len({c.id for c in calls}) == len(calls)


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, seed=7)])
def test_named_function_is_called_with_valid_arguments(client, sampling):
    out = client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=TOOLS, max_tokens=80,
                                         tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                         **sampling)
    choice = out.choices[0]
    assert choice.message.content is None and choice.finish_reason == "stop"  # OpenAI's answer to a forced call
    assert len(choice.message.tool_calls) == 1
    _check_calls(choice.message.tool_calls, allowed=("get_weather",))


def test_required_calls_one_or_more_declared_tools(client):
    out = client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=TOOLS, tool_choice="required",
                                         max_tokens=160, temperature=0.8, seed=1, n=2)
    assert len(out.choices) == 2
    for choice in out.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        _check_calls(choice.message.tool_calls)


def test_parallel_tool_calls_false_allows_one_call(client):
    out = client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=TOOLS, tool_choice="required",
                                         parallel_tool_calls=False, max_tokens=160, temperature=1.0, seed=4, n=3)
    for choice in out.choices:
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
        _check_calls(choice.message.tool_calls)


def test_streamed_tool_calls_reassemble(client):
    stream = client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=TOOLS, tool_choice="required",
                                            max_tokens=160, temperature=0, stream=True)
    calls, finish, content = {}, None, ""
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                calls.setdefault(delta.index, delta)  # sent whole: one delta per call
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and content == ""
    _check_calls([calls[i] for i in sorted(calls)])
    # The same request unstreamed gives the same calls (greedy).
    whole = client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=TOOLS, tool_choice="required",
                                           max_tokens=160, temperature=0)
    assert [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls] == \
        [(calls[i].function.name, calls[i].function.arguments) for i in sorted(calls)]


def test_cut_short_reply_comes_back_as_text(client):
    """max_tokens ends the JSON early: no tool_calls to give, the text and finish_reason "length"."""
    out = client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=TOOLS, max_tokens=3, temperature=0,
                                         tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = out.choices[0]
    assert choice.finish_reason == "length" and choice.message.tool_calls is None
    assert choice.message.content and choice.message.content.lstrip().startswith("{")


def test_conversation_with_earlier_calls_and_results(client):
    first = client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=TOOLS, max_tokens=80,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                           temperature=0)
    call = first.choices[0].message.tool_calls[0]
    messages = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                      {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    reply = client.chat.completions.create(model=MODEL_NAME, messages=messages, tools=TOOLS, tool_choice="none",
                                           max_tokens=20, temperature=0)
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content


def test_auto_without_a_parser_says_what_works(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=TOOLS, max_tokens=8)
    body = err.value.body
    assert body["param"] == "tool_choice" and "--tool-call-parser" in body["message"]
    assert '"required"' in body["message"]


@pytest.fixture(scope="module")
def hermes_server(tmp_path_factory):
    from tests.server.conftest import MAX_SEQ_LEN, ServerProcess

    srv = ServerProcess(["--served-model-name", MODEL_NAME, "--dtype", "float32", "--max-seq-len", str(MAX_SEQ_LEN),
                         "--tool-call-parser", "hermes", "--enable-auto-tool-choice"],
                        str(tmp_path_factory.mktemp("hermes") / "server.log"))
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_auto_with_a_parser_passes_plain_replies_through(hermes_server):
    """SmolLM2 was not taught <tool_call> blocks: its reply is content, streamed or not, the same text
    as without tools (its chat template ignores them), and never a half-parsed call."""
    client = openai.OpenAI(base_url=hermes_server.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    kwargs = dict(model=MODEL_NAME, messages=ASK, max_tokens=24, temperature=0)
    plain = client.chat.completions.create(**kwargs).choices[0]
    auto = client.chat.completions.create(tools=TOOLS, **kwargs).choices[0]
    assert auto.message.tool_calls is None and auto.message.content == plain.message.content
    assert auto.finish_reason == plain.finish_reason
    chunks = list(client.chat.completions.create(tools=TOOLS, stream=True, **kwargs))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.message.content
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


def test_enable_auto_tool_choice_needs_a_parser():
    from tritium.entrypoints.cli import build_parser
    from tritium.entrypoints.serve_cli import server_config

    with pytest.raises(ValueError, match="--enable-auto-tool-choice needs --tool-call-parser"):
        server_config(build_parser().parse_args(["serve", "--enable-auto-tool-choice"]))
    with pytest.raises(SystemExit):  # argparse names the choices
        build_parser().parse_args(["serve", "--tool-call-parser", "nope"])


def test_openai_parse_helper_with_a_pydantic_tool(client):
    """The client's own typed helper: a strict pydantic function tool, forced, parsed back into the model."""
    from typing import Literal

    from pydantic import BaseModel, Field

    class Weather(BaseModel):
        city: str = Field(max_length=20)
        unit: Literal["celsius", "fahrenheit"]

    tool = openai.pydantic_function_tool(Weather)
    out = client.chat.completions.parse(model=MODEL_NAME, messages=ASK, tools=[tool], max_tokens=60, temperature=0,
                                        tool_choice={"type": "function", "function": {"name": "Weather"}})
    call = out.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, Weather)


def test_named_function_arguments_stream_in_pieces(client):
    """As OpenAI streams a call: the first delta carries id, type and name, later ones more arguments."""
    kwargs = dict(model=MODEL_NAME, messages=ASK, tools=TOOLS, max_tokens=80, temperature=0,
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
    deltas, finish = [], None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert len(deltas) > 2 and finish == "stop"
    first, rest = deltas[0], deltas[1:]
    assert first.id.startswith("call-") and first.type == "function" and first.function.name == "get_weather"
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER)
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    assert whole.function.arguments == json.dumps(json.loads(arguments))  # the same call (greedy)

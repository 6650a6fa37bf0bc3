"""Earlier tool calls as chat templates take them: arguments (a JSON string in the API) become
objects; anything else is passed on as sent for the template to judge."""
from tritium.entrypoints.openai.tool_calls import template_message


def test_arguments_become_objects_for_the_template():
    call = {"id": "call-1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    out = template_message({"role": "assistant", "content": "", "tool_calls": [call]})
    assert out["tool_calls"][0]["function"] == {"name": "f", "arguments": {"x": 1}}
    assert call["function"]["arguments"] == '{"x": 1}'  # the request itself is not changed


def test_unusual_calls_pass_through():
    odd = [{"function": "f"}, {"function": {"name": "g", "arguments": "not json"}}]
    out = template_message({"role": "assistant", "content": "", "tool_calls": odd})
    assert out["tool_calls"] == odd
    plain = {"role": "user", "content": "hi"}
    assert template_message(plain) is plain

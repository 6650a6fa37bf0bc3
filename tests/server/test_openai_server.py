"""`tritium serve` with the embedded SmolLM2, driven by the official openai client and raw httpx."""
from __future__ import annotations

import asyncio
import json
import re

import httpx
import jsonschema
import openai
import pytest

from tests.server.conftest import MAX_SEQ_LEN, MODEL_NAME

CHAT = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference_llm():
    """The engine in this process, same settings: what the server must reproduce."""
    from tritium import BuildConfig
    from tritium.llm.llm import LLM

    with LLM(dtype="float32", build_config=BuildConfig(max_seq_len=MAX_SEQ_LEN, max_batch_size=8)) as llm:
        yield llm


def metrics(server) -> dict[str, float]:
    text = httpx.get(server.base_url + "/metrics").text
    values = {}
    for line in text.splitlines():
        m = re.match(r'^(tritium_\w+)(?:\{[^}]*\})? ([0-9.e+-]+)$', line)
        if m:
            values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(2))
    return values


# ---- endpoints ---------------------------------------------------------------------------------
def test_models_health_version(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert httpx.get(server.base_url + "/health").status_code == 200
    from tritium import __version__

    assert httpx.get(server.base_url + "/version").json() == {"version": __version__}


def test_completion_greedy_matches_engine_and_stream(client, reference_llm):
    from tritium import SamplingParams

    prompt = "The capital of France is"
    expected = reference_llm.generate(prompt, SamplingParams(max_tokens=12, temperature=0)).outputs[0].text
    full = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0)
    assert full.choices[0].text == expected
    assert full.usage.completion_tokens == 12 and full.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices


def test_chat_stream_equals_non_stream(client, reference_llm):
    from tritium import SamplingParams

    expected = reference_llm.chat(CHAT, SamplingParams(max_tokens=16, temperature=0)).outputs[0].text
    full = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_completion_tokens=16, temperature=0)
    assert full.choices[0].message.content == expected and full.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True,
                                                                         "continuous_usage_stats": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is not None for c in chunks[1:])  # continuous usage stats


def test_prompt_forms_n_and_seed(client, reference_llm):
    ids = reference_llm.tokenizer.encode("Once upon a time")
    out = client.completions.create(model=MODEL_NAME, prompt=["Hello", "One, two,"], max_tokens=4, temperature=0)
    assert [c.index for c in out.choices] == [0, 1] and all(c.text for c in out.choices)
    by_ids = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=6, temperature=0)
    by_text = client.completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    two = client.completions.create(model=MODEL_NAME, prompt=[ids, ids[:2]], max_tokens=3, temperature=0)
    assert two.choices[0].text == client.completions.create(
        model=MODEL_NAME, prompt=ids, max_tokens=3, temperature=0).choices[0].text
    kw = dict(model=MODEL_NAME, prompt="My favourite animal is", max_tokens=8, temperature=1.0, n=3, seed=7)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices] and [c.index for c in a.choices] == [0, 1, 2]
    assert len({c.text for c in a.choices}) > 1
    chat_n = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=4, n=2, seed=1,
                                            temperature=1.0, stream=True)
    indices = {c.choices[0].index for c in chat_n if c.choices}
    assert indices == {0, 1}


def test_echo_logprobs_contract_lm_eval(client, reference_llm):
    """What lm-evaluation-harness's local-completions reads: token-id prompts, echo, logprobs."""
    from tritium import SamplingParams

    ids = reference_llm.tokenizer.encode("The quick brown fox jumps over the lazy dog")
    ref = reference_llm.generate(ids, SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=1))
    expected = [None] + [pos[tok].logprob for tok, pos in zip(ids[1:], ref.prompt_logprobs[1:])]
    for max_tokens in (0, 1):
        out = client.completions.create(model=MODEL_NAME, prompt=[ids], max_tokens=max_tokens, echo=True,
                                        logprobs=1, temperature=0, seed=1234)
        choice = out.choices[0]
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids) + max_tokens
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.token_logprobs[1:len(ids)] == pytest.approx(expected[1:], abs=1e-4)
        assert choice.text.startswith("The quick brown fox jumps over the lazy dog")
        assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
        # lm-eval's greedy check: each token's logprob against the max of its top_logprobs.
        for token_lp, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
            assert token_lp <= max(top.values()) + 1e-6
        assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == max_tokens
    # Generated-token logprobs: top-k dicts with the chosen token.
    gen = client.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=3, logprobs=2, temperature=0)
    lp = gen.choices[0].logprobs
    assert len(lp.tokens) == 3 and all(len(t) >= 2 for t in lp.top_logprobs)
    assert all(v == max(t.values()) for v, t in zip(lp.token_logprobs, lp.top_logprobs))  # greedy


def test_chat_logprobs(client):
    out = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=5, temperature=0,
                                         logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy picks the top one
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs),
                                                                 reverse=True)
    assert "".join(e.token for e in content) == out.choices[0].message.content


def test_stop_strings_never_leak_in_stream(client):
    base = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    text = base.choices[0].text
    stop = text[3:6]
    assert stop and stop in text
    for include in (False, True):
        kw = dict(model=MODEL_NAME, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[stop],
                  extra_body={"include_stop_str_in_output": include})
        full = client.completions.create(**kw)
        streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
        expected = text[:text.index(stop)] + (stop if include else "")
        assert full.choices[0].text == streamed == expected
        assert full.choices[0].finish_reason == "stop"


def test_streamed_utf8_is_never_split(client):
    kw = dict(model=MODEL_NAME, prompt="Les élèves français écrivent: « Ça", max_tokens=24, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    pieces = [c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices]
    assert "".join(pieces) == full and "\ufffd" not in full
    assert not any("\ufffd" in p for p in pieces)


def test_extensions_are_honoured(client, reference_llm):
    eos = reference_llm.model_config.eos_token_ids[0]
    out = client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=20, temperature=0,
                                    extra_body={"ignore_eos": True, "min_tokens": 20, "top_k": 5,
                                                "repetition_penalty": 1.1, "min_p": 0.05})
    assert out.usage.completion_tokens == 20
    first = client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=3, temperature=0)
    ids = reference_llm.tokenizer.encode(first.choices[0].text, add_special_tokens=False)
    stopped = client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=3, temperature=0,
                                        extra_body={"stop_token_ids": [ids[0]]})
    assert stopped.choices[0].finish_reason == "stop" and stopped.choices[0].stop_reason == ids[0]
    assert eos not in ids


SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                                                      "maxItems": 3}},
          "required": ["name", "age", "colors"], "additionalProperties": False}


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, seed=3)])
def test_response_format_json_schema(client, sampling):
    out = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Describe a person."}], max_tokens=80,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}, **sampling)
    assert out.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(out.choices[0].message.content), SCHEMA)


def test_response_format_json_object_streamed(client):
    stream = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "A fruit?"}],
                                            max_tokens=120, temperature=0.7, seed=5, stream=True,
                                            response_format={"type": "json_object"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(text), dict)


def test_vllm_guided_fields_on_both_endpoints(client):
    """vLLM's extra_body fields: the reply follows the guide on /v1/completions and /v1/chat/completions."""
    colors = ["dark red", "green (light)", "blue?"]  # regex characters in the choices are literal
    out = client.completions.create(model=MODEL_NAME, prompt="My favourite color is", max_tokens=10,
                                    temperature=1.0, seed=2, n=3, extra_body={"guided_choice": colors})
    assert all(c.text in colors for c in out.choices)
    out = client.completions.create(model=MODEL_NAME, prompt="The year is", max_tokens=8, temperature=0,
                                    extra_body={"guided_regex": r"[12][0-9]{3}"})
    assert re.fullmatch(r"[12][0-9]{3}", out.choices[0].text)
    chat = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Describe a person."}],
                                          max_tokens=80, temperature=0, extra_body={"guided_json": SCHEMA})
    jsonschema.validate(json.loads(chat.choices[0].message.content), SCHEMA)
    grammar = 'start: "yes" | "no"'
    chat = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Is it sunny?"}],
                                          max_tokens=5, temperature=0, extra_body={"guided_grammar": grammar})
    assert chat.choices[0].message.content in ("yes", "no")


def test_tokenize_detokenize(server, reference_llm):
    r = httpx.post(server.base_url + "/tokenize", json={"model": MODEL_NAME, "prompt": "Hello world"}).json()
    assert r["tokens"] == reference_llm.tokenizer.encode("Hello world") and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == MAX_SEQ_LEN
    back = httpx.post(server.base_url + "/detokenize", json={"tokens": r["tokens"]}).json()
    assert back["prompt"].endswith("Hello world")
    chat = httpx.post(server.base_url + "/tokenize", json={"messages": CHAT}).json()
    assert chat["tokens"] == reference_llm.tokenizer.encode(reference_llm.apply_chat_template(CHAT))


def test_metrics_count_requests_and_tokens(server, client):
    before = metrics(server)
    client.completions.create(model=MODEL_NAME, prompt="Count: one", max_tokens=5, temperature=0,
                              extra_body={"ignore_eos": True})
    after = metrics(server)
    assert after["tritium_generation_tokens_total"] - before.get("tritium_generation_tokens_total", 0) == 5
    assert after["tritium_prompt_tokens_total"] > before.get("tritium_prompt_tokens_total", 0)
    assert after["tritium_time_to_first_token_seconds_count"] > before.get("tritium_time_to_first_token_seconds_count", 0)
    assert after["tritium_e2e_request_latency_seconds_count"] > before.get("tritium_e2e_request_latency_seconds_count", 0)
    for name in ("tritium_num_requests_running", "tritium_num_requests_waiting", "tritium_kv_cache_usage_perc",
                 "tritium_num_preemptions_total", "tritium_time_per_output_token_seconds_count"):
        assert name in after


# ---- errors ------------------------------------------------------------------------------------
def _error(response: httpx.Response, status: int, param=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]


LONG = "word " * (MAX_SEQ_LEN + 10)

ERROR_CASES = [
    ("/v1/completions", {"prompt": "x", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n"),
    ("/v1/completions", {"prompt": "x", "logprobs": 100}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "stop": [""]}, 400, "stop"),
    ("/v1/completions", {"prompt": "x", "min_tokens": 9, "max_tokens": 2}, 400, "min_tokens"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": [[]]}, 400, "prompt"),
    ("/v1/completions", {"prompt": [49152]}, 400, "prompt"),
    ("/v1/completions", {"prompt": [-1]}, 400, "prompt"),
    ("/v1/completions", {"prompt": LONG}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "max_tokens": MAX_SEQ_LEN}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"1": 5}}, 400, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "best_of": 3, "n": 1, "stream": True}, 400, "best_of"),
    ("/v1/completions", {}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}], "max_completion_tokens": MAX_SEQ_LEN},
     400, "max_completion_tokens"),
    # tools: "auto" (the default with tools) has no parser here; bad tools / choices are named
    ("/v1/chat/completions", {"messages": CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]},
     400, "tool_choice"),
    ("/v1/chat/completions", {"messages": CHAT, "tool_choice": "auto"}, 400, "tool_choice"),
    ("/v1/chat/completions", {"messages": CHAT, "tool_choice": "required"}, 400, "tool_choice"),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [{"type": "function"}], "tool_choice": "required"},
     400, "tools.0"),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [{"type": "function", "function": {"name": "f"}}],
                              "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice"),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [{"type": "function", "function": {"name": "f"}}],
                              "tool_choice": "required", "response_format": {"type": "json_object"}},
     400, "response_format"),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "no-such-type"}}}], "tool_choice": "required"}, 400, "tools"),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [{"type": "function", "function": {"name": "f"}}],
                              "tool_choice": "required", "stream": True, "logprobs": True}, 400, "logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/completions", {"prompt": "x", "guided_regex": "a", "guided_choice": ["b"]}, 400, "guided_choice"),
    ("/v1/completions", {"prompt": "x", "guided_regex": "(unclosed"}, 400, "guided_regex"),
    ("/v1/completions", {"prompt": "x", "guided_choice": []}, 400, "guided_choice"),
    ("/v1/completions", {"prompt": "x", "guided_json": {"type": "no-such-type"}}, 400, "guided_json"),
    ("/v1/chat/completions", {"messages": CHAT, "guided_regex": "a", "response_format": {"type": "json_object"}},
     400, "guided_regex"),
    ("/v1/chat/completions", {"messages": CHAT, "response_format": {"type": "json_schema"}}, 400, "response_format"),
    ("/v1/chat/completions", {"messages": CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}}, 400,
     "response_format"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages.0.content.0.type"),
    ("/v1/chat/completions", {"messages": CHAT, "model": "nope"}, 404, "model"),
    ("/tokenize", {"prompt": "a", "messages": CHAT}, 400, "prompt"),
    ("/detokenize", {"tokens": [10 ** 9]}, 400, "tokens"),
]


@pytest.mark.parametrize("path,body,status,param", ERROR_CASES, ids=[f"{c[0]}:{c[3]}:{i}" for i, c in
                                                                    enumerate(ERROR_CASES)])
def test_bad_requests_get_the_openai_envelope(server, path, body, status, param):
    err = _error(httpx.post(server.base_url + path, json=body, timeout=30), status, param)
    if status == 404:
        assert err["code"] == "model_not_found"


def test_malformed_bodies_and_routes(server):
    url = server.base_url
    _error(httpx.post(url + "/v1/completions", content=b'{"prompt": "x", ', headers={"content-type": "application/json"}), 400)
    _error(httpx.post(url + "/v1/completions", content=b'[1, 2]', headers={"content-type": "application/json"}), 400)
    _error(httpx.post(url + "/v1/chat/completions", content=b'"hi"', headers={"content-type": "application/json"}), 400)
    _error(httpx.post(url + "/v1/completions", content=b'{"prompt": "x", "temperature": NaN}',
                      headers={"content-type": "application/json"}), 400, "temperature")
    _error(httpx.get(url + "/v1/nothing-here"), 404)
    _error(httpx.get(url + "/v1/completions"), 405)


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-unknown", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=CHAT, temperature=-3)
    assert info.value.body["param"] == "temperature"
    # Bad input disturbed nobody: the next request works.
    assert client.completions.create(model=MODEL_NAME, prompt="ok", max_tokens=2).choices[0].text is not None


# ---- load --------------------------------------------------------------------------------------
def test_64_concurrent_streams_complete(server):
    async def one(aclient, i):
        stream = await aclient.completions.create(model=MODEL_NAME, prompt=f"Story number {i}:", max_tokens=8,
                                                  temperature=0.8, seed=i, stream=True,
                                                  extra_body={"ignore_eos": True})
        texts, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                texts.append(chunk.choices[0].text)
                finish = chunk.choices[0].finish_reason or finish
        return "".join(texts), finish

    async def main():
        async with openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0,
                                      timeout=120, http_client=httpx.AsyncClient(
                                          limits=httpx.Limits(max_connections=100))) as aclient:
            return await asyncio.gather(*(one(aclient, i) for i in range(64)))

    results = asyncio.run(main())
    assert len(results) == 64 and all(finish == "length" and text for text, finish in results)


def test_storm_of_early_timeouts_frees_everything(server, client):
    async def impatient(i):
        # A whole-request deadline (not httpx's per-read timeout, which a fast machine's steady stream never trips):
        # every client gives up long before 400 tokens x 24 requests can be generated, and hangs up mid-request.
        body = {"model": MODEL_NAME, "prompt": f"Write a long essay about topic {i}.", "max_tokens": 400,
                "stream": i % 2 == 0, "ignore_eos": True}

        async def request(ac):
            if body["stream"]:
                async with ac.stream("POST", server.base_url + "/v1/completions", json=body) as r:
                    async for _ in r.aiter_lines():
                        pass
            else:
                await ac.post(server.base_url + "/v1/completions", json=body)

        async with httpx.AsyncClient(timeout=httpx.Timeout(60)) as ac:
            try:
                await asyncio.wait_for(request(ac), timeout=0.5)
            except asyncio.TimeoutError:
                return True
        return False

    async def storm():
        return await asyncio.gather(*(impatient(i) for i in range(24)))

    timed_out = asyncio.run(storm())
    assert sum(timed_out) >= 20
    import time

    start = time.monotonic()
    out = client.completions.create(model=MODEL_NAME, prompt="Quick:", max_tokens=4, temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop") and time.monotonic() - start < 30
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = metrics(server)
        if (m["tritium_kv_cache_usage_perc"], m["tritium_num_requests_running"],
                m["tritium_num_requests_waiting"]) == (0.0, 0.0, 0.0):
            break
        time.sleep(0.2)
    assert (m["tritium_kv_cache_usage_perc"], m["tritium_num_requests_running"],
            m["tritium_num_requests_waiting"]) == (0.0, 0.0, 0.0)
    assert m["tritium_request_success_total"] > 0

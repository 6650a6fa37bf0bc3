"""Server behaviour that needs its own process: API key, admission control, SIGTERM drain,
engine death. Each runs `tritium serve` on a tiny random checkpoint (token-id prompts)."""
from __future__ import annotations

import asyncio
import json
import os
import signal

import httpx
import openai

PROMPT = [5, 17, 42, 99]


def _long_request(max_tokens: int = 240, stream: bool = False) -> dict:
    return {"prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}


def test_api_key_and_queue_limit(start_tiny_server):
    srv = start_tiny_server("--api-key", "sesame", "--max-batch-size", "2", "--max-queued-requests", "1").wait_ready()
    url = srv.base_url
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/health").status_code == 200  # probes need no key
    assert httpx.get(url + "/metrics").status_code == 200
    client = openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0)
    assert client.completions.create(model=client.models.list().data[0].id, prompt=PROMPT,
                                     max_tokens=3).usage.completion_tokens == 3

    async def burst():
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": "Bearer sesame"}) as ac:
            return await asyncio.gather(*(ac.post(url + "/v1/completions", json=_long_request()) for _ in range(8)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [503] * 5  # 2 running + 1 queued
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "service_unavailable_error"
        else:
            assert r.json()["usage"]["completion_tokens"] == 240
    assert 'tritium_requests_rejected_total{model_name=' in httpx.get(url + "/metrics").text


def _read_stream(lines) -> tuple[str, int, list[str]]:
    finish, tokens, events = None, 0, []
    for line in lines:
        if not line.startswith("data: "):
            continue
        events.append(line)
        if line == "data: [DONE]":
            break
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices", []):
            finish = choice["finish_reason"] or finish
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    return finish, tokens, events


def test_sigterm_drains_in_flight_requests_then_exits(start_tiny_server):
    srv = start_tiny_server("--drain-timeout", "60").wait_ready()
    body = dict(_long_request(stream=True), stream_options={"include_usage": True})
    with httpx.Client(timeout=60) as http, http.stream("POST", srv.base_url + "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # generation has started
        srv.proc.send_signal(signal.SIGTERM)
        assert httpx.get(srv.base_url + "/health").status_code == 503  # draining: load balancers stop sending
        refused = httpx.post(srv.base_url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
        finish, tokens, _ = _read_stream(lines)
    assert (finish, tokens) == ("length", 240)  # the in-flight request finished normally
    assert srv.proc.wait(30) == 0


def test_drain_timeout_aborts_what_is_left(start_tiny_server):
    srv = start_tiny_server("--drain-timeout", "0.2", "--max-batch-size", "1").wait_ready()
    with httpx.Client(timeout=60) as http, http.stream(
            "POST", srv.base_url + "/v1/completions", json=_long_request(max_tokens=250, stream=True)) as r:
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        srv.proc.send_signal(signal.SIGTERM)
        finish, _, events = _read_stream(lines)
    assert finish in ("abort", "length") and events[-1] == "data: [DONE]"
    assert srv.proc.wait(30) == 0


_CRASHING_ENGINE = """
import sys
from tritium.engine.engine_core import EngineCore

def crash(self):
    if self.scheduler.has_unfinished_requests():
        raise SystemExit("simulated engine crash")  # not an Exception: the engine thread dies

EngineCore.step = crash
from tritium.entrypoints.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_engine_thread_death_fails_requests_and_exits_nonzero(start_tiny_server):
    srv = start_tiny_server("--no-engine-process", script=_CRASHING_ENGINE).wait_ready()
    r = httpx.post(srv.base_url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 4}, timeout=30)
    assert r.status_code == 500 and "engine" in r.json()["error"]["message"]
    assert srv.proc.wait(30) == 1
    assert "the engine has stopped" in srv.log()


def _engine_child_pid(server_pid: int) -> int:
    """The engine process: the server's child started by multiprocessing's spawn."""
    children = []
    for task in os.listdir(f"/proc/{server_pid}/task"):  # started from the thread that loaded the engine
        with open(f"/proc/{server_pid}/task/{task}/children") as f:
            children += [int(p) for p in f.read().split()]
    for pid in children:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                return pid
    raise AssertionError(f"no engine process among the server's children {children}")


def test_engine_process_death_fails_requests_and_exits_nonzero(start_tiny_server):
    srv = start_tiny_server("--max-seq-len", "256").wait_ready()
    engine_pid = _engine_child_pid(srv.proc.pid)
    events = []
    with httpx.stream("POST", srv.base_url + "/v1/completions", json=_long_request(240, stream=True),
                      timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[len("data: "):])
            if len(events) == 1:  # generating: the engine process dies now
                os.kill(engine_pid, signal.SIGKILL)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "engine process exited unexpectedly" in error["message"] and "-9" in error["message"]
    assert srv.proc.wait(30) == 1  # the watchdog ends the server: a supervisor restarts it
    assert "the engine has stopped" in srv.log()

"""Schema fuzzing of /openapi.json with schemathesis: whatever hypothesis sends, no 5xx.

Bounded: a few examples per operation, and generation lengths clamped so the run stays short.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig


# Fuzzing only (schemathesis' coverage phase alone sends hundreds of requests), a few examples each.
_CONFIG = {"phases": {"coverage": {"enabled": False}, "examples": {"enabled": False},
                      "stateful": {"enabled": False}}, "generation": {"max-examples": 8}}


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.base_url + "/openapi.json",
                                         config=SchemathesisConfig.from_dict(_CONFIG))


schema = schemathesis.pytest.from_fixture("api_schema")

_CAPS = {"max_tokens": 4, "max_completion_tokens": 4, "min_tokens": 4, "n": 2, "best_of": 2, "logprobs": 3,
         "top_logprobs": 3}


def _clamp(body) -> None:
    if not isinstance(body, dict):
        return
    for key, cap in _CAPS.items():
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            body[key] = cap
    if ("messages" in body or "prompt" in body) and body.get("max_tokens") is None:
        body["max_tokens"] = 4  # the default is the whole context: minutes on a CPU
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) > 4 and all(isinstance(p, list) for p in prompt):
        body["prompt"] = prompt[:4]


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
def test_no_server_errors(case):
    _clamp(case.body)
    response = case.call(timeout=60)
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}, response.text[:500]

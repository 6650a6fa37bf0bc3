"""`tritium serve --capacity-scheduler-policy` (trtllm-bench's `--scheduler_policy` spelling too)
reaches the served engine: on a KV cache that holds two of four concurrent requests at full
length, max_utilization preempts (tritium_num_preemptions in /metrics) and guaranteed_no_evict
never does, with the same greedy completions."""
from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

# 4 distinct prompts of 6 token ids; 6 + 40 tokens = 3 blocks of 16 each at full length, 6 blocks in the cache.
PROMPTS = [[7 + i, 40, 41 + i, 99, 100 + i, 3] for i in range(4)]
FLAGS = ["--max-seq-len", "64", "--kv-cache-max-tokens", "96", "--max-batch-size", "8", "--disable-prefix-caching"]


def preemptions(base_url: str) -> float:
    families = text_string_to_metric_families(httpx.get(base_url + "/metrics").text)
    return sum(s.value for f in families if f.name == "tritium_num_preemptions" for s in f.samples
               if s.name.endswith("_total"))


async def greedy_tokens(base_url: str) -> list[list[str]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        responses = await asyncio.gather(*(client.post("/v1/completions", json={
            "model": model, "prompt": p, "max_tokens": 40, "temperature": 0, "ignore_eos": True, "logprobs": 0})
            for p in PROMPTS))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    tokens = [r.json()["choices"][0]["logprobs"]["tokens"] for r in responses]  # "<token ID>": no tokenizer
    assert all(len(t) == 40 for t in tokens)
    return tokens


def test_the_policy_reaches_the_served_engine(start_tiny_server):
    tokens = {}
    for flag, policy in [("--capacity-scheduler-policy", "max_utilization"),
                         ("--scheduler_policy", "GUARANTEED_NO_EVICT")]:  # trtllm-bench's spelling, any case
        srv = start_tiny_server(*FLAGS, flag, policy).wait_ready()
        tokens[policy.lower()] = asyncio.run(greedy_tokens(srv.base_url))
        assert (preemptions(srv.base_url) > 0) == (policy == "max_utilization")
        srv.stop()
    assert tokens["max_utilization"] == tokens["guaranteed_no_evict"]


def test_a_bad_policy_is_named(start_tiny_server):
    srv = start_tiny_server("--capacity-scheduler-policy", "static_batch")
    assert srv.proc.wait(60) == 2
    assert "invalid choice: 'static_batch' (choose from 'max_utilization', 'guaranteed_no_evict')" in srv.log()

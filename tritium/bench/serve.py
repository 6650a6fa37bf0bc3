"""`tritium bench serve`: a load generator for any OpenAI-compatible server (vLLM's serving
benchmark, in tritium's shape).

Requests come from a JSONL dataset in trtllm-bench's format ({"input_ids": [...] | "prompt": "...",
"output_tokens": N}, from `tritium bench prepare-dataset`; tritium.bench.dataset) or are drawn on
the spot as token-norm-dist (random token ids, normally distributed lengths). Each is streamed with EOS
ignored, and timed per chunk as the client sees it: TTFT, TPOT, ITL and end-to-end percentiles,
request and token throughput. Arrivals: all at once, or Poisson at --request-rate (gamma with
--burstiness); --max-concurrency caps the requests in flight.

    tritium bench serve --base-url http://127.0.0.1:8000 --num-prompts 200 --input-mean 467 \\
        --output-mean 256 --vocab-size 128256 --max-concurrency 256
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from tritium.bench.dataset import BenchRequest, LengthDist, read_jsonl, token_norm_dist
from tritium.bench.report import summarize

# ---- one request --------------------------------------------------------------------------------


@dataclass
class RequestResult:
    num_input_tokens: int
    start: float
    chunk_times: list[float] = field(default_factory=list)
    num_output_tokens: int = 0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.num_output_tokens > 0 and bool(self.chunk_times)

    @property
    def ttft(self) -> float:
        return self.chunk_times[0] - self.start

    @property
    def e2e(self) -> float:
        return self.chunk_times[-1] - self.start

    @property
    def tpot(self) -> Optional[float]:
        n = self.num_output_tokens
        return (self.chunk_times[-1] - self.chunk_times[0]) / (n - 1) if n > 1 else None


async def _send(session, url: str, model: str, request: BenchRequest, chat: bool) -> RequestResult:
    body: dict[str, Any] = {"model": model, "max_tokens": request.output_tokens, "stream": True,
                            "ignore_eos": True, "temperature": 0.0,
                            "stream_options": {"include_usage": True}}
    if chat:
        body["messages"] = [{"role": "user", "content": request.prompt}]
    else:
        body["prompt"] = request.input_ids if request.input_ids is not None else request.prompt
    result = RequestResult(num_input_tokens=len(request.input_ids) if request.input_ids is not None else 0,
                           start=time.perf_counter())
    try:
        async with session.post(url, json=body) as response:
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.read())[:300]!r}"
                return result
            async for raw in response.content:  # one SSE line at a time
                if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                    continue
                now = time.perf_counter()
                chunk = json.loads(raw[6:])
                if "error" in chunk:
                    result.error = chunk["error"].get("message", "error event")
                elif chunk.get("choices"):
                    result.chunk_times.append(now)
                if chunk.get("usage"):
                    result.num_output_tokens = chunk["usage"]["completion_tokens"]
                    result.num_input_tokens = chunk["usage"]["prompt_tokens"]
    except Exception as e:  # noqa: BLE001 - a failed request is counted, not fatal
        result.error = f"{type(e).__name__}: {e}"
    return result


# ---- the run ------------------------------------------------------------------------------------


def wait_for_server(base_url: str, timeout_s: float, process=None) -> None:
    """Poll GET /health until 200 (a server still loading answers 503); `process`: a Popen that
    must stay alive meanwhile."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base_url.rstrip("/") + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url} was not ready (GET /health) within {timeout_s:g} s")
        time.sleep(0.25)


@dataclass
class ServeSettings:
    base_url: str = "http://127.0.0.1:8000"
    endpoint: str = "/v1/completions"
    model: Optional[str] = None
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: Optional[int] = None
    api_key: Optional[str] = None
    seed: int = 0
    timeout_s: float = 3600.0


async def run_load(settings: ServeSettings, requests: Sequence[BenchRequest]) -> tuple[list[RequestResult], float]:
    # aiohttp, as vLLM's serving benchmark: httpx's connection pool scans every connection for
    # each request, which at 512 streams took a third of the client's time and delayed requests
    # (their TTFT counted the client's own lag).
    import aiohttp

    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    limit = settings.max_concurrency or len(requests)
    connector = aiohttp.TCPConnector(limit=limit, force_close=False)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    async with aiohttp.ClientSession(base_url=settings.base_url.rstrip("/") + "/", headers=headers,
                                     connector=connector, timeout=timeout) as client:
        async with client.get("v1/models") as response:
            model = settings.model or (await response.json())["data"][0]["id"]
        chat = "chat" in settings.endpoint
        if chat and any(r.prompt is None for r in requests):
            raise ValueError("the chat endpoint needs text prompts (a dataset with \"prompt\")")
        gate = asyncio.Semaphore(limit)
        rng = np.random.default_rng(settings.seed)

        async def limited(request):
            async with gate:
                return await _send(client, settings.endpoint.lstrip("/"), model, request, chat)

        start = time.perf_counter()
        tasks = []
        for request in requests:
            tasks.append(asyncio.ensure_future(limited(request)))
            if math.isfinite(settings.request_rate):
                # Gamma inter-arrival times with mean 1/rate; burstiness 1 is a Poisson process.
                theta = 1.0 / (settings.request_rate * settings.burstiness)
                await asyncio.sleep(rng.gamma(settings.burstiness, theta))
        results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - start


def _stats(values) -> Optional[dict[str, float]]:
    return summarize(list(values), 1e3)  # seconds -> ms


def serving_report(results: list[RequestResult], duration_s: float, settings: ServeSettings) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    total_in = sum(r.num_input_tokens for r in ok)
    total_out = sum(r.num_output_tokens for r in ok)
    itls = [d for r in ok for d in np.diff(r.chunk_times)]
    return {
        "base_url": settings.base_url, "endpoint": settings.endpoint,
        "request_rate": settings.request_rate if math.isfinite(settings.request_rate) else "inf",
        "max_concurrency": settings.max_concurrency,
        "successful_requests": len(ok), "failed_requests": len(errors), "first_errors": errors[:3],
        "duration_s": duration_s, "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput_req_s": len(ok) / duration_s,
        "output_throughput_tok_s": total_out / duration_s,
        "total_token_throughput_tok_s": (total_in + total_out) / duration_s,
        "ttft_ms": _stats(r.ttft for r in ok), "tpot_ms": _stats(r.tpot for r in ok),
        "itl_ms": _stats(itls), "e2e_latency_ms": _stats(r.e2e for r in ok),
    }


def request_rows(results: list[RequestResult]) -> list[dict[str, Any]]:
    """One row a request, in sending order (--save-detailed): when it was sent (seconds after the
    first), its tokens, TTFT / TPOT / end-to-end in ms, and its error; shows which requests make
    a tail (arrivals close together, the first ones)."""
    origin = min((r.start for r in results), default=0.0)
    rows = []
    for r in results:
        row = {"sent_s": round(r.start - origin, 6), "input_tokens": r.num_input_tokens,
               "output_tokens": r.num_output_tokens, "error": r.error}
        if r.ok:
            row.update(ttft_ms=r.ttft * 1e3, tpot_ms=r.tpot * 1e3 if r.tpot is not None else None,
                       e2e_ms=r.e2e * 1e3)
        rows.append(row)
    return rows


def format_report(report: dict[str, Any]) -> str:
    lines = ["{:=^60}".format(" Serving Benchmark Result ")]
    for key, label in (("successful_requests", "Successful requests"), ("failed_requests", "Failed requests"),
                       ("request_rate", "Request rate (req/s)"), ("max_concurrency", "Max concurrency"),
                       ("duration_s", "Benchmark duration (s)"), ("total_input_tokens", "Total input tokens"),
                       ("total_output_tokens", "Total generated tokens"),
                       ("request_throughput_req_s", "Request throughput (req/s)"),
                       ("output_throughput_tok_s", "Output token throughput (tok/s)"),
                       ("total_token_throughput_tok_s", "Total token throughput (tok/s)")):
        value = report[key]
        lines.append(f"{label:<44}{value:>16.2f}" if isinstance(value, float) else f"{label:<44}{str(value):>16}")
    for key, title in (("ttft_ms", "Time to First Token"), ("tpot_ms", "Time per Output Token (excl. 1st token)"),
                       ("itl_ms", "Inter-token Latency"), ("e2e_latency_ms", "End-to-end Latency")):
        lines.append("{:-^60}".format(title))
        st = report[key] or {}
        for stat in ("mean", "p50", "p90", "p99"):
            if stat in st:
                lines.append(f"{stat.upper() if stat != 'mean' else 'Mean'} {key.split('_')[0].upper()} (ms)"
                             .ljust(44) + f"{st[stat]:>16.2f}")
    for error in report["first_errors"]:
        lines.append(f"error: {error}")
    lines.append("=" * 60)
    return "\n".join(lines)


# ---- command line -------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--base-url", "--base_url", default="http://127.0.0.1:8000")
    g.add_argument("--endpoint", default="/v1/completions", choices=["/v1/completions", "/v1/chat/completions"])
    g.add_argument("--model", default=None, help="`model` to send (default: the server's first /v1/models entry)")
    g.add_argument("--api-key", "--api_key", default=os.environ.get("OPENAI_API_KEY"))
    g.add_argument("--ready-timeout", "--ready_timeout", type=float, default=0.0,
                   help="first wait up to this many seconds for GET /health to answer 200")
    g = p.add_argument_group("requests")
    g.add_argument("--dataset", default=None, help="JSONL requests (trtllm-bench format); else token-norm-dist")
    g.add_argument("--num-prompts", "--num_prompts", type=int, default=100)
    for side, default in (("input", 128.0), ("output", 128.0)):
        g.add_argument(f"--{side}-mean", f"--{side}_mean", type=float, default=default,
                       help=f"token-norm-dist: mean {side} tokens")
        g.add_argument(f"--{side}-stdev", f"--{side}_stdev", type=float, default=0.0)
    g.add_argument("--vocab-size", "--vocab_size", type=int, default=32000,
                   help="token-norm-dist: ids drawn from [0, vocab-size)")
    g = p.add_argument_group("load")
    g.add_argument("--request-rate", "--request_rate", type=float, default=math.inf,
                   help="requests per second (Poisson arrivals; default inf: all at once)")
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the arrivals (1: Poisson)")
    g.add_argument("--max-concurrency", "--max_concurrency", type=int, default=None)
    g.add_argument("--warmup", type=int, default=2, help="unmeasured requests first")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--result-json", "--result_json", default=None, help="also write the report as JSON here")
    g.add_argument("--save-detailed", "--save_detailed", action="store_true",
                   help="the JSON report also lists every request (sent at, tokens, TTFT, TPOT, end-to-end, error)")


def run(args: argparse.Namespace) -> int:
    for name in ("num_prompts", "vocab_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.save_detailed and not args.result_json:
        raise ValueError("--save-detailed needs --result-json (the rows go into that file)")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise ValueError("--max-concurrency must be >= 1")
    if not args.request_rate > 0 or not args.burstiness > 0:
        raise ValueError("--request-rate and --burstiness must be > 0")
    if args.dataset:
        requests = read_jsonl(args.dataset, args.num_prompts)
    else:
        requests = token_norm_dist(args.num_prompts, LengthDist("input", args.input_mean, args.input_stdev),
                                   LengthDist("output", args.output_mean, args.output_stdev), args.vocab_size,
                                   args.seed)
    settings = ServeSettings(base_url=args.base_url.rstrip("/"), endpoint=args.endpoint, model=args.model,
                             request_rate=args.request_rate, burstiness=args.burstiness,
                             max_concurrency=args.max_concurrency, api_key=args.api_key, seed=args.seed)
    if args.ready_timeout > 0:
        wait_for_server(settings.base_url, args.ready_timeout)
    if args.warmup:
        asyncio.run(run_load(dataclasses.replace(settings, request_rate=math.inf),
                             [dataclasses.replace(r, output_tokens=4) for r in requests[:args.warmup]]))
    results, duration = asyncio.run(run_load(settings, requests))
    report = serving_report(results, duration, settings)
    print(format_report(report))
    if args.save_detailed:
        report["requests"] = request_rows(results)
    if args.result_json:
        with open(args.result_json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0 if report["failed_requests"] == 0 else 1

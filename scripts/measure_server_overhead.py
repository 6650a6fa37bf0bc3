"""Does the HTTP front end cost the engine? Same engine, same requests, three ways:

  offline    LLM.generate (no streaming), first and last; the faster of the two is the base
  stream     LLM.generate_async(streaming=True) for every request in one asyncio loop (no HTTP)
  server     `tritium serve`'s app on this engine, loaded by `tritium bench serve` (a separate
             process, streaming, --max-concurrency = all requests)

For each: output tok/s, and the engine thread's own view: median step time (schedule + forward +
sample + update) and median loop period (step to step, including output processing and any wait
for the GIL) over the decode steps with the whole batch running.

    python scripts/measure_server_overhead.py --num-requests 64 --input-len 128 --output-len 64
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def instrument(llm, log: list):
    """Record (start, duration, running requests) of every engine step."""
    core = llm._engine.core
    step = core.step

    def timed_step():
        running = core.scheduler.num_running
        start = time.perf_counter()
        out = step()
        log.append((start, time.perf_counter() - start, running))
        return out

    core.step = timed_step


def step_summary(log: list, full_batch: int) -> dict:
    decode = [(s, d) for s, d, running in log if running >= full_batch]
    starts = np.array([s for s, _ in decode])
    periods = np.diff(starts) if len(starts) > 1 else np.array([np.nan])
    periods = periods[periods < 10 * np.median(periods)] if len(periods) > 1 else periods  # drop phase gaps
    return {"max_running": max((r for _, _, r in log), default=0), "steps": len(log),
            "decode_steps": len(decode), "median_step_ms": float(np.median([d for _, d in decode]) * 1e3),
            "median_period_ms": float(np.median(periods) * 1e3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--load-format", default="auto", help="dummy: random weights from a config.json folder")
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (leave a core to the client)")
    p.add_argument("--full-fraction", type=float, default=1.0,
                   help="decode steps with at least this fraction of the requests running are summarized")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    import uvicorn

    from tritium import BuildConfig, SamplingParams
    from tritium.bench.serve import wait_for_server
    from tritium.entrypoints.openai.api_server import ServerConfig, build_app
    from tritium.llm.llm import LLM

    n = args.num_requests
    llm = LLM(args.model, dtype=args.dtype, load_format=args.load_format, build_config=BuildConfig(max_batch_size=n, max_num_tokens=8192,
                                                                      max_seq_len=args.input_len + args.output_len + 8))
    rng = np.random.default_rng(0)
    vocab = llm.model_config.vocab_size
    prompts = [rng.integers(100, min(vocab, 20000), size=args.input_len).tolist() for _ in range(n)]
    params = SamplingParams(max_tokens=args.output_len, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:4], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)  # warm-up
    results = {}

    def measure(name, run):
        log: list = []
        instrument(llm, log)
        start = time.perf_counter()
        out_tokens = run()
        wall = time.perf_counter() - start
        results[name] = {"output_tok_s": out_tokens / wall, "wall_s": wall,
                         **step_summary(log, max(1, int(n * args.full_fraction)))}
        print(name, json.dumps(results[name]), flush=True)

    def offline():
        outs = llm.generate(prompts, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    async def streamed():
        async def one(prompt):
            final = None
            async for final in llm.generate_async(prompt, params, streaming=True):
                pass
            return len(final.outputs[0].token_ids)
        return sum(await asyncio.gather(*(one(pr) for pr in prompts)))

    measure("offline", offline)
    measure("stream", lambda: asyncio.run(streamed()))

    app = build_app(ServerConfig(load_llm=lambda: llm, served_model_name="m", max_batch_size=n))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_server(f"http://127.0.0.1:{args.port}", 120)
    with tempfile.TemporaryDirectory() as tmp:
        dataset, report = os.path.join(tmp, "d.jsonl"), os.path.join(tmp, "r.json")
        with open(dataset, "w") as f:
            for pr in prompts:
                f.write(json.dumps({"input_ids": pr, "output_tokens": args.output_len}) + "\n")
        cmd = [sys.executable, "-m", "tritium.entrypoints.cli", "bench", "serve", "--base-url",
               f"http://127.0.0.1:{args.port}", "--dataset", dataset, "--max-concurrency", str(n), "--warmup", "0",
               "--result-json", report]

        def via_server():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(report) as f:
                return json.load(f)["total_output_tokens"]

        measure("server", via_server)
        with open(report) as f:
            client = json.load(f)
        results["server"]["client_output_tok_s"] = client["output_throughput_tok_s"]
        results["server"]["client_ttft_ms_mean"] = client["ttft_ms"]["mean"]
        results["server"]["client_itl_ms_mean"] = client["itl_ms"]["mean"]
    measure("offline_again", offline)  # the first run may pay one-time costs (first big prefill)
    server.should_exit = True  # its shutdown also shuts the engine down
    thread.join(10)
    base = max(results["offline"], results["offline_again"], key=lambda r: r["output_tok_s"])
    for name in ("stream", "server"):
        r = results[name]
        # The server's throughput as its client measured it (the client process start is not serving time).
        tok_s = r.get("client_output_tok_s", r["output_tok_s"])
        print(f"{name:8s} vs offline: throughput {tok_s / base['output_tok_s']:.3f}x, "
              f"step {r['median_step_ms'] / base['median_step_ms']:.3f}x, "
              f"loop period {r['median_period_ms'] / base['median_period_ms']:.3f}x")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
